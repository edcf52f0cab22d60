// Convolution lowering: im2col and its adjoint col2im.
//
// Layouts (all C-contiguous):
//   x, dx : (n, C, H, W)
//   col   : (C*KH*KW, n*OH*OW), row = (c*KH + kh)*KW + kw, column = (img*OH + oh)*OW + ow
//   col[row, column] = x[img, c, oh*stride + kh - pad, ow*stride + kw - pad], 0 outside the image.
//
// Every kernel is a grid-stride loop over its output elements with 64-bit index math.
// col2im gathers (one thread per dx element, no atomics) and overwrites dx, adding the
// contributions in (kh, kw) row-major order: the same order as the NumPy backend.

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ col,
                              long long n, long long channels, long long height, long long width,
                              long long kernel_h, long long kernel_w, long long stride,
                              long long pad, long long out_h, long long out_w)
{
    const long long cols = n * out_h * out_w;
    const long long total = channels * kernel_h * kernel_w * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long row = i / cols;
        const long long column = i - row * cols;
        // column -> (img, oh, ow)
        const long long ow = column % out_w;
        const long long oh = (column / out_w) % out_h;
        const long long img = column / (out_w * out_h);
        // row -> (c, kh, kw)
        const long long kw = row % kernel_w;
        const long long kh = (row / kernel_w) % kernel_h;
        const long long c = row / (kernel_w * kernel_h);

        const long long h = oh * stride + kh - pad;
        const long long w = ow * stride + kw - pad;
        T value = T(0);
        if (h >= 0 && h < height && w >= 0 && w < width) {
            value = x[((img * channels + c) * height + h) * width + w];
        }
        col[i] = value;
    }
}

template <typename T>
__global__ void col2im_kernel(const T* __restrict__ col, T* __restrict__ dx,
                              long long n, long long channels, long long height, long long width,
                              long long kernel_h, long long kernel_w, long long stride,
                              long long pad, long long out_h, long long out_w)
{
    const long long cols = n * out_h * out_w;
    const long long total = n * channels * height * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        // i -> (img, c, h, w)
        const long long w = i % width;
        const long long h = (i / width) % height;
        const long long c = (i / (width * height)) % channels;
        const long long img = i / (width * height * channels);

        T acc = T(0);
        for (long long kh = 0; kh < kernel_h; ++kh) {
            // output row oh reads input row h when oh*stride + kh - pad == h
            const long long hp = h + pad - kh;
            if (hp < 0 || hp % stride != 0) continue;
            const long long oh = hp / stride;
            if (oh >= out_h) continue;
            for (long long kw = 0; kw < kernel_w; ++kw) {
                const long long wp = w + pad - kw;
                if (wp < 0 || wp % stride != 0) continue;
                const long long ow = wp / stride;
                if (ow >= out_w) continue;
                const long long row = (c * kernel_h + kh) * kernel_w + kw;
                const long long column = (img * out_h + oh) * out_w + ow;
                acc += col[row * cols + column];
            }
        }
        dx[i] = acc;
    }
}
