// Image jitter for data augmentation: a random shift (a crop of the zero-padded image) and a
// random left-right mirror per image, bit for bit the NumPy backend's (see Backend.jitter).
//
// Image i of the (seed, counter) stream draws at indices 3i, 3i+1, 3i+2 (layout in counter_rng.py):
//     dy = ((u(3i) * (2*pad+1)) >> 24) - pad,  dx likewise from u(3i+1),
//     flipped = flip && top bit of draw 3i+2,  where u(k) = counter_bits(key, k) >> 8,
// and output pixel (h, w) reads x at (h + dy, s + dx), s = W-1-w when flipped else w; outside
// the image it is 0. Each thread recomputes its image's three hashes (a few dozen integer ops)
// instead of reading them from a draws buffer: one launch, no scratch, nothing to allocate.
//
// jitter_draw and jittered_pixel are __host__ __device__ and the kernel sits behind __CUDACC__,
// so a host C++ compiler can run the same per-pixel code (tests/test_augment.py does).
// NVRTC: read_source() has prepended counter_hash.cuh already; a host compiler includes it.
#if !defined(CONVNET_COUNTER_HASH_CUH)
#include "counter_hash.cuh"
#endif

struct JitterDraw {
    long long dy, dx;  // the shift, each in [-pad, pad]
    bool flipped;      // mirror the shifted image left-right
};

__host__ __device__ __forceinline__ JitterDraw jitter_draw(unsigned int key, long long image,
                                                           long long pad, bool flip)
{
    const unsigned int first = static_cast<unsigned int>(3 * image);  // 3n <= 2^32, host-checked
    const unsigned long long choices = 2 * pad + 1;
    // floor(u * choices / 2^24): u is uniform on [0, 2^24), so each shift in [0, 2*pad] is hit
    // equally often up to one part in 2^24 / choices. The product fits 64 bits (pad < 2^31).
    const unsigned long long u_y = counter_bits(key, first) >> 8;
    const unsigned long long u_x = counter_bits(key, first + 1u) >> 8;
    JitterDraw draw;
    draw.dy = static_cast<long long>((u_y * choices) >> 24) - pad;
    draw.dx = static_cast<long long>((u_x * choices) >> 24) - pad;
    draw.flipped = flip && (counter_bits(key, first + 2u) >> 31) != 0u;
    return draw;
}

// Pixel (h, w) of one jittered height x width plane whose source plane starts at `plane`.
template <typename T>
__host__ __device__ __forceinline__ T jittered_pixel(const T* plane, long long h, long long w,
                                                     long long height, long long width,
                                                     const JitterDraw& draw)
{
    const long long src_h = h + draw.dy;
    // The mirrored output column, then + dx: the window is shifted first, then mirrored.
    const long long src_w = (draw.flipped ? width - 1 - w : w) + draw.dx;
    if (src_h < 0 || src_h >= height || src_w < 0 || src_w >= width) return T(0);  // padding
    return plane[src_h * width + src_w];
}

#if defined(__CUDACC__)
// One thread per output element of the (n, C, H, W) batch; x and out do not overlap.
template <typename T>
__global__ void jitter_kernel(const T* __restrict__ x, T* __restrict__ out, long long n,
                              long long channels, long long height, long long width,
                              long long pad, int flip, unsigned int seed,
                              const long long* __restrict__ counter, long long first_image)
{
    // The counter lives in device memory (mod 2^32), so a replayed graph jitters each step anew.
    const unsigned int key = random_stream_key(seed, static_cast<unsigned int>(*counter));
    for (const long long i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);  // plane = image*C + channel
        const JitterDraw draw = jitter_draw(key, first_image + plane / channels, pad, flip != 0);
        out[i] = jittered_pixel(x + plane * height * width, h, w, height, width, draw);
    }
}
#endif
