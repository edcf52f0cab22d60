// Counter-based uniform random numbers (the dropout mask), bit for bit the NumPy backend's.
//
// Every value is a pure function of (seed, counter, flat element index); no generator state.
// The mixer is the 32-bit finalizer ("fmix32") of Austin Appleby's MurmurHash3, and the stream
// layout is the one documented in backends/base.py (all arithmetic mod 2^32 in unsigned int):
//     key  = fmix32(fmix32(seed ^ 0x9E3779B9) ^ counter)
//     bits = fmix32(fmix32(index ^ key) + key)
//     u    = (bits >> 8) * 2^-24              24 bits: exact in float and double
// The counter is a kernel argument for now; for CUDA graph replay it will be read from device
// memory (a captured increment kernel advancing it), and the hash below does not change.
//
// The hash functions are __host__ __device__ and the kernel sits behind __CUDACC__, so a host
// C++ compiler can build the hash alone (tests/test_norm_dropout.py checks it against NumPy).

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

// The uniform in [0, 1) of element `index` of the stream with key `key`.
template <typename T>
__host__ __device__ __forceinline__ T counter_uniform(unsigned int key, unsigned int index)
{
    const unsigned int bits = murmur3_fmix32(murmur3_fmix32(index ^ key) + key);
    return static_cast<T>(bits >> 8) * static_cast<T>(5.9604644775390625e-08);  // 2^-24, exact
}

#if defined(__CUDACC__)
// out[i] = counter_uniform(key(seed, counter), i) for i < total (total < 2^32, checked on the host).
template <typename T>
__global__ void uniform_kernel(T* __restrict__ out, long long total, unsigned int seed,
                               unsigned int counter)
{
    const unsigned int key = random_stream_key(seed, counter);
    for (const long long i : grid_stride_range(total)) {
        out[i] = counter_uniform<T>(key, static_cast<unsigned int>(i));
    }
}
#endif
