// Counter-based uniform random numbers (the dropout mask), bit for bit the NumPy backend's.
//
// The hash (murmur3_fmix32, random_stream_key, counter_uniform) lives in counter_hash.cuh,
// shared with jitter.cu; see there and backends/counter_rng.py for the stream layout.
// The counter is read from device memory (mod 2^32): a replayed CUDA graph launches this kernel
// with the arguments of its capture, and each replay must draw from that step's counter.
//
// The kernel sits behind __CUDACC__, so a host C++ compiler can build this file for the hash
// alone (tests/test_backends_random.py checks it against NumPy).
// NVRTC: read_source() has prepended counter_hash.cuh already; a host compiler includes it.
#if !defined(CONVNET_COUNTER_HASH_CUH)
#include "counter_hash.cuh"
#endif

#if defined(__CUDACC__)
// out[i] = counter_uniform(key(seed, *counter), first + i) for i < total (first + total < 2^32,
// checked on the host): a slice of a batch draws what the whole batch would.
template <typename T>
__global__ void uniform_kernel(T* __restrict__ out, long long total, unsigned int seed,
                               const long long* __restrict__ counter, unsigned int first)
{
    const unsigned int key = random_stream_key(seed, static_cast<unsigned int>(*counter));
    for (const long long i : grid_stride_range(total)) {
        out[i] = counter_uniform<T>(key, first + static_cast<unsigned int>(i));
    }
}
#endif
