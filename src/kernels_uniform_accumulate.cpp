// kvq::kernels, one family per TU (kernels/definitions.hpp): the weighted sums of values of
// the uniform codecs (q8_0, q4_0, q4_1, q3_1, q2_1).
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_UNIFORM_ACCUMULATE
#include <kvq/kernels/definitions.hpp>
