// kvq::kernels, one family per TU (kernels/definitions.hpp): the per-channel codecs.
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_PER_CHANNEL
#include <kvq/kernels/definitions.hpp>
