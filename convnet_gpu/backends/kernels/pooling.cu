// Pooling over KHxKW windows: max (with argmax) and average, forward and backward.
//
// Layouts (all C-contiguous): x, dx (n, C, H, W); y, dy, argmax (n, C, OH, OW).
// Output (oh, ow) with window offset (kh, kw) reads input (oh*stride + kh - pad, ow*stride + kw - pad);
// offsets outside the image are skipped (max) or read as zero (average).
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

template <typename T>
__global__ void maxpool_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       int* __restrict__ argmax,
                                       long long n, long long channels, long long height,
                                       long long width, long long kernel_h, long long kernel_w,
                                       long long stride, long long pad, long long out_h,
                                       long long out_w)
{
    const long long total = n * channels * out_h * out_w;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        // i -> (plane = img*C + c, oh, ow)
        const long long ow = i % out_w;
        const long long oh = (i / out_w) % out_h;
        const long long plane = i / (out_w * out_h);
        const T* x_plane = x + plane * height * width;

        T best = negative_infinity<T>();
        int best_k = 0;
        for (long long kh = 0; kh < kernel_h; ++kh) {
            const long long h = oh * stride + kh - pad;
            if (h < 0 || h >= height) continue;
            for (long long kw = 0; kw < kernel_w; ++kw) {
                const long long w = ow * stride + kw - pad;
                if (w < 0 || w >= width) continue;
                const T value = x_plane[h * width + w];
                if (value > best) {  // strict: the first maximum wins ties
                    best = value;
                    best_k = (int)(kh * kernel_w + kw);
                }
            }
        }
        y[i] = best;
        argmax[i] = best_k;
    }
}

template <typename T>
__global__ void maxpool_backward_kernel(const T* __restrict__ dy, const int* __restrict__ argmax,
                                        T* __restrict__ dx,
                                        long long n, long long channels, long long height,
                                        long long width, long long kernel_h, long long kernel_w,
                                        long long stride, long long pad, long long out_h,
                                        long long out_w)
{
    const long long total = n * channels * height * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        // i -> (plane = img*C + c, h, w)
        const long long w = i % width;
        const long long h = (i / width) % height;
        const long long plane = i / (width * height);
        const long long out_plane = plane * out_h * out_w;

        T acc = T(0);
        for (long long kh = 0; kh < kernel_h; ++kh) {
            const long long hp = h + pad - kh;  // == oh*stride for the window that reads h
            if (hp < 0 || hp % stride != 0) continue;
            const long long oh = hp / stride;
            if (oh >= out_h) continue;
            for (long long kw = 0; kw < kernel_w; ++kw) {
                const long long wp = w + pad - kw;
                if (wp < 0 || wp % stride != 0) continue;
                const long long ow = wp / stride;
                if (ow >= out_w) continue;
                const long long o = out_plane + oh * out_w + ow;
                if (argmax[o] == (int)(kh * kernel_w + kw)) {
                    acc += dy[o];
                }
            }
        }
        dx[i] = acc;
    }
}

template <typename T>
__global__ void avgpool_forward_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       long long n, long long channels, long long height,
                                       long long width, long long kernel_h, long long kernel_w,
                                       long long stride, long long pad, long long out_h,
                                       long long out_w)
{
    const long long total = n * channels * out_h * out_w;
    const T scale = window_scale<T>(kernel_h, kernel_w);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long ow = i % out_w;
        const long long oh = (i / out_w) % out_h;
        const long long plane = i / (out_w * out_h);
        const T* x_plane = x + plane * height * width;

        T acc = T(0);
        for (long long kh = 0; kh < kernel_h; ++kh) {
            const long long h = oh * stride + kh - pad;
            if (h < 0 || h >= height) continue;
            for (long long kw = 0; kw < kernel_w; ++kw) {
                const long long w = ow * stride + kw - pad;
                if (w < 0 || w >= width) continue;
                acc += x_plane[h * width + w];
            }
        }
        y[i] = acc * scale;
    }
}

template <typename T>
__global__ void avgpool_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx,
                                        long long n, long long channels, long long height,
                                        long long width, long long kernel_h, long long kernel_w,
                                        long long stride, long long pad, long long out_h,
                                        long long out_w)
{
    const long long total = n * channels * height * width;
    const T scale = window_scale<T>(kernel_h, kernel_w);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long w = i % width;
        const long long h = (i / width) % height;
        const long long plane = i / (width * height);
        const long long out_plane = plane * out_h * out_w;

        T acc = T(0);
        for (long long kh = 0; kh < kernel_h; ++kh) {
            const long long hp = h + pad - kh;
            if (hp < 0 || hp % stride != 0) continue;
            const long long oh = hp / stride;
            if (oh >= out_h) continue;
            for (long long kw = 0; kw < kernel_w; ++kw) {
                const long long wp = w + pad - kw;
                if (wp < 0 || wp % stride != 0) continue;
                const long long ow = wp / stride;
                if (ow >= out_w) continue;
                acc += dy[out_plane + oh * out_w + ow];
            }
        }
        dx[i] = acc * scale;
    }
}
