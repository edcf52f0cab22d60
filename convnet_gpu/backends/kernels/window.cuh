// Index helpers shared by the window kernels (im2col.cu, pooling.cu).
//
// NVRTC compiles a single string with no include path, so kernels/__init__.py read_source()
// puts this text in front of each .cu source instead of an #include. All index math is 64-bit.
//
// Window geometry: output (oh, ow) of an OH x OW grid of KH x KW windows, at window offset
// (kh, kw), reads input pixel (h, w) = (oh*stride + kh - pad, ow*stride + kw - pad) of an H x W
// image plane; offsets that land outside the plane are padding. The window loops below visit
// offsets in (kh, kw) row-major order and pass k = kh*KW + kw (the flat offset argmax stores).

// `for (long long i : grid_stride_range(total))` visits this thread's share of [0, total): it
// starts at the thread's global index and strides by the size of the whole grid, so a grid of
// any size covers every index exactly once.
struct GridStrideRange {
    struct Iterator {
        long long i, step;
        __device__ long long operator*() const { return i; }
        __device__ Iterator& operator++() { i += step; return *this; }
        __device__ bool operator!=(long long end) const { return i < end; }  // the last step overshoots
    };
    long long first, step, total;
    __device__ Iterator begin() const { return {first, step}; }
    __device__ long long end() const { return total; }
};

__device__ __forceinline__ GridStrideRange grid_stride_range(long long total)
{
    return {(long long)blockIdx.x * blockDim.x + threadIdx.x, (long long)blockDim.x * gridDim.x,
            total};
}

// The coordinates of flat index i = (plane*rows + row)*cols + col into C-contiguous
// (planes, rows, cols) data: `const auto [plane, row, col] = split_index(i, rows, cols);`
struct PlaneIndex {
    long long plane, row, col;
};

__device__ __forceinline__ PlaneIndex split_index(long long i, long long rows, long long cols)
{
    return {i / (cols * rows), (i / cols) % rows, i % cols};
}

struct WindowGeometry {
    long long height, width, kernel_h, kernel_w, stride, pad, out_h, out_w;
};

// body(h*W + w, k) for every in-image input pixel (h, w) that output (oh, ow) reads.
template <typename Body>
__device__ __forceinline__ void for_each_input_of_window(const WindowGeometry& g, long long oh,
                                                         long long ow, Body&& body)
{
    for (long long kh = 0; kh < g.kernel_h; ++kh) {
        const long long h = oh * g.stride + kh - g.pad;
        if (h < 0 || h >= g.height) continue;
        for (long long kw = 0; kw < g.kernel_w; ++kw) {
            const long long w = ow * g.stride + kw - g.pad;
            if (w < 0 || w >= g.width) continue;
            body(h * g.width + w, kh * g.kernel_w + kw);
        }
    }
}

// body(oh*OW + ow, k) for every output (oh, ow) whose window reads input pixel (h, w) at offset k:
// the gather that the backward passes use instead of scattering with atomics.
template <typename Body>
__device__ __forceinline__ void for_each_window_reading(const WindowGeometry& g, long long h,
                                                        long long w, Body&& body)
{
    for (long long kh = 0; kh < g.kernel_h; ++kh) {
        // oh*stride + kh - pad == h has a solution oh only when h + pad - kh is a multiple of stride.
        const long long hp = h + g.pad - kh;
        if (hp < 0 || hp % g.stride != 0) continue;
        const long long oh = hp / g.stride;
        if (oh >= g.out_h) continue;
        for (long long kw = 0; kw < g.kernel_w; ++kw) {
            const long long wp = w + g.pad - kw;
            if (wp < 0 || wp % g.stride != 0) continue;
            const long long ow = wp / g.stride;
            if (ow >= g.out_w) continue;
            body(oh * g.out_w + ow, kh * g.kernel_w + kw);
        }
    }
}
