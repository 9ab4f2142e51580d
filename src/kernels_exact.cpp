// kvq::kernels, one family per TU (kernels/definitions.hpp): the exact formats (f32, f16), the online softmax and the target queries.
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_EXACT
#include <kvq/kernels/definitions.hpp>
