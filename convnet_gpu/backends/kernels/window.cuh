// Index helpers shared by the window kernels (im2col.cu, pooling.cu).
//
// NVRTC compiles a single string with no include path, so kernels/__init__.py read_source()
// puts this text in front of each .cu source instead of an #include. The index type I is a
// template parameter: `int` where every array of a launch has fewer than 2^30 elements (the
// host picks it; 32-bit division is several times cheaper than 64-bit, and these kernels are
// mostly index math), `long long` otherwise.
//
// Window geometry: output (oh, ow) of an OH x OW grid of KH x KW windows, at window offset
// (kh, kw), reads input pixel (h, w) = (oh*stride + kh - pad, ow*stride + kw - pad) of an H x W
// image plane; offsets that land outside the plane are padding. The window loops below visit
// offsets in (kh, kw) row-major order and pass k = kh*KW + kw (the flat offset argmax stores).

// `for (I i : grid_stride_range(total))` visits this thread's share of [0, total): it starts at
// the thread's global index and strides by the size of the whole grid, so a grid of any size
// covers every index exactly once. (With I = int the last step may pass total by the grid size,
// hence the host's 2^30 bound.)
template <typename I>
struct GridStrideRange {
    struct Iterator {
        I i, step;
        __device__ I operator*() const { return i; }
        __device__ Iterator& operator++() { i += step; return *this; }
        __device__ bool operator!=(I end) const { return i < end; }  // the last step overshoots
    };
    I first, step, total;
    __device__ Iterator begin() const { return {first, step}; }
    __device__ I end() const { return total; }
};

template <typename I>
__device__ __forceinline__ GridStrideRange<I> grid_stride_range(I total)
{
    return {(I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x, (I)blockDim.x * (I)gridDim.x, total};
}

// The coordinates of flat index i = (plane*rows + row)*cols + col into C-contiguous
// (planes, rows, cols) data: `const auto [plane, row, col] = split_index(i, rows, cols);`
template <typename I>
struct PlaneIndex {
    I plane, row, col;
};

template <typename I>
__device__ __forceinline__ PlaneIndex<I> split_index(I i, I rows, I cols)
{
    const I rest = i / cols;
    return {rest / rows, rest % rows, i - rest * cols};
}

template <typename I>
struct WindowGeometry {
    I height, width, kernel_h, kernel_w, stride, pad, out_h, out_w;
};

// body(h*W + w, k) for every in-image input pixel (h, w) that output (oh, ow) reads.
template <typename I, typename Body>
__device__ __forceinline__ void for_each_input_of_window(const WindowGeometry<I>& g, I oh, I ow,
                                                         Body&& body)
{
    for (I kh = 0; kh < g.kernel_h; ++kh) {
        const I h = oh * g.stride + kh - g.pad;
        if (h < 0 || h >= g.height) continue;
        for (I kw = 0; kw < g.kernel_w; ++kw) {
            const I w = ow * g.stride + kw - g.pad;
            if (w < 0 || w >= g.width) continue;
            body(h * g.width + w, kh * g.kernel_w + kw);
        }
    }
}

// body(oh*OW + ow, k) for every output (oh, ow) whose window reads input pixel (h, w) at offset k:
// the gather that the backward passes use instead of scattering with atomics.
template <typename I, typename Body>
__device__ __forceinline__ void for_each_window_reading(const WindowGeometry<I>& g, I h, I w,
                                                        Body&& body)
{
    for (I kh = 0; kh < g.kernel_h; ++kh) {
        // oh*stride + kh - pad == h has a solution oh only when h + pad - kh is a multiple of stride.
        const I hp = h + g.pad - kh;
        if (hp < 0 || hp % g.stride != 0) continue;
        const I oh = hp / g.stride;
        if (oh >= g.out_h) continue;
        for (I kw = 0; kw < g.kernel_w; ++kw) {
            const I wp = w + g.pad - kw;
            if (wp < 0 || wp % g.stride != 0) continue;
            const I ow = wp / g.stride;
            if (ow >= g.out_w) continue;
            body(oh * g.out_w + ow, kh * g.kernel_w + kw);
        }
    }
}
