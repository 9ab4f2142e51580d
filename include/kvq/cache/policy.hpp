// Policy: the K and V codec types of a cache (or of one tier/boundary of it).
//
// K and V are separate because they tolerate compression differently: K errors
// pass through softmax's exponential, V errors stay proportional (seed 004),
// so a good cache usually spends more bits on K.
#pragma once

#include <kvq/codec/codec.hpp>

namespace kvq {

template <Codec K, Codec V>
struct Policy {
  using key_codec = K;
  using value_codec = V;
};

namespace detail {
// Codec types a typed cache can build by name without the registry (e.g. a
// codec an engine defines itself). Each must be constructible from head_dim.
template <class... Cs>
struct CodecList {};

template <class... A, class... B>
CodecList<A..., B...> concat(CodecList<A...>, CodecList<B...>);
}  // namespace detail

}  // namespace kvq
