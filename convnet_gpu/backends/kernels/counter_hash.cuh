// The counter-based hash behind every random number (random.cu's uniforms, jitter.cu's draws).
//
// Every value is a pure function of (seed, counter, index); no generator state. The mixer is
// the 32-bit finalizer ("fmix32") of Austin Appleby's MurmurHash3, and the stream layout is the
// one documented in backends/counter_rng.py (all arithmetic mod 2^32 in unsigned int):
//     key  = fmix32(fmix32(seed ^ 0x9E3779B9) ^ counter)
//     bits = fmix32(fmix32(index ^ key) + key)
//     u    = bits >> 8                     the 24-bit draw; as a uniform, u * 2^-24 in [0, 1)
//
// kernels/__init__.py read_source() puts this file in front of every .cu source (after
// window.cuh), because NVRTC compiles one string with no include path. The functions are
// __host__ __device__ so a host C++ compiler can build them too: a .cu file that uses them
// includes this header behind `#if !defined(CONVNET_COUNTER_HASH_CUH)`, which NVRTC skips (the
// prepended copy has defined the guard) and g++ follows (tests build the hashes on the CPU).
// (`#if !defined`, not the short form: tests reject sources that look like Python.)
#if !defined(CONVNET_COUNTER_HASH_CUH)
#define CONVNET_COUNTER_HASH_CUH

__host__ __device__ __forceinline__ unsigned int murmur3_fmix32(unsigned int h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

__host__ __device__ __forceinline__ unsigned int random_stream_key(unsigned int seed,
                                                                   unsigned int counter)
{
    return murmur3_fmix32(murmur3_fmix32(seed ^ 0x9E3779B9u) ^ counter);
}

// The 32 random bits of element `index` of the stream with key `key` (counter_rng.counter_hash).
__host__ __device__ __forceinline__ unsigned int counter_bits(unsigned int key, unsigned int index)
{
    return murmur3_fmix32(murmur3_fmix32(index ^ key) + key);
}

// The uniform in [0, 1) of element `index`: its top 24 bits times 2^-24 (exact in float and double).
template <typename T>
__host__ __device__ __forceinline__ T counter_uniform(unsigned int key, unsigned int index)
{
    return static_cast<T>(counter_bits(key, index) >> 8) *
           static_cast<T>(5.9604644775390625e-08);  // 2^-24, exact
}

#endif  // CONVNET_COUNTER_HASH_CUH
