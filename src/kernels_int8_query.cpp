// kvq::kernels, one family per TU (kernels/definitions.hpp): the int8-query scores of the uniform codecs.
#define KVQ_KERNEL_FAMILY KVQ_FAMILY_INT8_QUERY
#include <kvq/kernels/definitions.hpp>
