// kvq::kernels, one family per TU (kernels/definitions.hpp): the turbo codecs.
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_TURBO
#include <kvq/kernels/definitions.hpp>
