// Pooling over KHxKW windows: max (with argmax) and average, forward and backward
// (helpers in window.cuh).
//
// Layouts (all C-contiguous): x, dx (n, C, H, W); y, dy, argmax (n, C, OH, OW).
// Each thread works inside one (n*C) plane; window offsets outside the image are skipped (max)
// or read as zero (average).
//
// Max pooling: y = max of the in-image window values, argmax (int32) = kh*KW + kw of the FIRST
// maximum in (kh, kw) row-major order (strict '>', ties keep the earlier offset); a window with
// no in-image value gives y = -inf, argmax = 0.
// Average pooling divides the in-image sum by KH*KW (padding counts as zero).
// Backward kernels gather (one thread per dx element, no atomics) and overwrite dx, adding the
// contributions in (kh, kw) row-major order: the same order as the NumPy backend.

template <typename T> __device__ __forceinline__ T negative_infinity();
template <> __device__ __forceinline__ float negative_infinity<float>()
{
    return __int_as_float((int)0xff800000u);
}
template <> __device__ __forceinline__ double negative_infinity<double>()
{
    return __longlong_as_double((long long)0xfff0000000000000ull);
}

// 1 / (KH*KW) rounded once to T, like NumPy's `y * (1.0 / (KH*KW))` on a T array.
template <typename T>
__device__ __forceinline__ T window_scale(long long kernel_h, long long kernel_w)
{
    return static_cast<T>(1.0 / static_cast<double>(kernel_h * kernel_w));
}

// The first maximum of value(p) over the in-image pixels p of output (oh, ow)'s window: y and
// argmax of every max pooling (strict '>': ties keep the earlier offset; none: -inf, 0).
template <typename T, typename I, typename Value>
__device__ __forceinline__ void window_max(const WindowGeometry<I>& g, I oh, I ow, Value&& value,
                                          T& y, int& argmax)
{
    T best = negative_infinity<T>();
    int best_k = 0;
    for_each_input_of_window(g, oh, ow, [&](I p, I k) {
        const T v = value(p);
        if (v > best) {  // strict: the first maximum wins ties
            best = v;
            best_k = (int)k;
        }
    });
    y = best;
    argmax = best_k;
}

template <typename T, typename I>
__global__ void maxpool_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       int* __restrict__ argmax,
                                       I n, I channels, I height,
                                       I width, I kernel_h, I kernel_w,
                                       I stride, I pad, I out_h,
                                       I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    for (const I i : grid_stride_range(n * channels * out_h * out_w)) {
        const auto [plane, oh, ow] = split_index(i, out_h, out_w);
        const T* x_plane = x + plane * height * width;
        window_max<T>(g, oh, ow, [&](I p) { return x_plane[p]; }, y[i], argmax[i]);
    }
}

template <typename T, typename I>
__global__ void maxpool_backward_kernel(const T* __restrict__ dy, const int* __restrict__ argmax,
                                        T* __restrict__ dx,
                                        I n, I channels, I height,
                                        I width, I kernel_h, I kernel_w,
                                        I stride, I pad, I out_h,
                                        I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    for (const I i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);
        const T* dy_plane = dy + plane * out_h * out_w;
        const int* argmax_plane = argmax + plane * out_h * out_w;

        T acc = T(0);
        for_each_window_reading(g, h, w, [&](I o, I k) {
            if (argmax_plane[o] == (int)k) acc += dy_plane[o];  // (h, w) was that window's max
        });
        dx[i] = acc;
    }
}

template <typename T, typename I>
__global__ void avgpool_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       I n, I channels, I height,
                                       I width, I kernel_h, I kernel_w,
                                       I stride, I pad, I out_h,
                                       I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    const T scale = window_scale<T>(kernel_h, kernel_w);
    for (const I i : grid_stride_range(n * channels * out_h * out_w)) {
        const auto [plane, oh, ow] = split_index(i, out_h, out_w);
        const T* x_plane = x + plane * height * width;

        T acc = T(0);
        for_each_input_of_window(g, oh, ow, [&](I p, I) { acc += x_plane[p]; });
        y[i] = acc * scale;
    }
}

template <typename T, typename I>
__global__ void avgpool_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx,
                                        I n, I channels, I height,
                                        I width, I kernel_h, I kernel_w,
                                        I stride, I pad, I out_h,
                                        I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    const T scale = window_scale<T>(kernel_h, kernel_w);
    for (const I i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);
        const T* dy_plane = dy + plane * out_h * out_w;

        T acc = T(0);
        for_each_window_reading(g, h, w, [&](I o, I) { acc += dy_plane[o]; });
        dx[i] = acc * scale;
    }
}

// Bias, ReLU and max pooling fused (fusion.py): the pooling of relu(x + bias[c]) without writing
// x + bias or its ReLU, and its backward, with the unfused kernels' roundings and NaN rules: x + b
// rounded once, relu(v) as cupy.maximum(v, 0) (a NaN stays NaN, so it never wins a window).
template <typename T> __device__ __forceinline__ T relu_of(T v)
{
    return (v > T(0) || v != v) ? v : T(0);
}

template <typename T, typename I>
__global__ void bias_relu_maxpool_forward_kernel(const T* __restrict__ x,
                                                 const T* __restrict__ bias, T* __restrict__ y,
                                                 int* __restrict__ argmax,
                                                 I n, I channels, I height,
                                                 I width, I kernel_h, I kernel_w,
                                                 I stride, I pad, I out_h,
                                                 I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    for (const I i : grid_stride_range(n * channels * out_h * out_w)) {
        const auto [plane, oh, ow] = split_index(i, out_h, out_w);
        const T* x_plane = x + plane * height * width;
        const T shift = bias[plane % channels];
        window_max<T>(g, oh, ow, [&](I p) { return relu_of(x_plane[p] + shift); }, y[i],
                      argmax[i]);
    }
}

// dx = the gradient at x + bias: max pooling's backward (dy gathered from the windows whose
// argmax is this pixel), times ReLU's 1 or 0 for the pixel, whose ReLU value is those windows'
// y (the value that won them; a window that nothing won has y = -inf: 0).
template <typename T, typename I>
__global__ void bias_relu_maxpool_backward_kernel(const T* __restrict__ dy,
                                                  const T* __restrict__ y,
                                                  const int* __restrict__ argmax,
                                                  T* __restrict__ dx,
                                                  I n, I channels, I height,
                                                  I width, I kernel_h, I kernel_w,
                                                  I stride, I pad, I out_h,
                                                  I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    for (const I i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);
        const T* dy_plane = dy + plane * out_h * out_w;
        const T* y_plane = y + plane * out_h * out_w;
        const int* argmax_plane = argmax + plane * out_h * out_w;

        T acc = T(0);
        bool on = false;
        for_each_window_reading(g, h, w, [&](I o, I k) {
            if (argmax_plane[o] == (int)k) {
                acc += dy_plane[o];
                on = y_plane[o] > T(0);
            }
        });
        dx[i] = T(on ? 1 : 0) * acc;
    }
}
