// kvq::kernels, one family per TU (kernels/definitions.hpp): scores of the uniform codecs
// (q8_0, q4_0, q4_1, q3_1, q2_1) with f32 queries.
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_UNIFORM_SCORES
#include <kvq/kernels/definitions.hpp>
