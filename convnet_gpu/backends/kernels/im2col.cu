// Convolution lowering: im2col and its adjoint col2im (helpers in window.cuh).
//
// Layouts (all C-contiguous):
//   x, dx : (n, C, H, W)
//   col   : (C*KH*KW, n*OH*OW), row = (c*KH + kh)*KW + kw, column = (img*OH + oh)*OW + ow
//   col[row, column] = x[img, c, oh*stride + kh - pad, ow*stride + kw - pad], 0 outside the image.
//
// col2im gathers (one thread per dx element, no atomics) and overwrites dx, adding the
// contributions in (kh, kw) row-major order: the same order as the NumPy backend.

template <typename T>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ col,
                              long long n, long long channels, long long height, long long width,
                              long long kernel_h, long long kernel_w, long long stride,
                              long long pad, long long out_h, long long out_w)
{
    const long long cols = n * out_h * out_w;
    for (const long long i : grid_stride_range(channels * kernel_h * kernel_w * cols)) {
        const long long row = i / cols;
        const auto [c, kh, kw] = split_index(row, kernel_h, kernel_w);
        const auto [img, oh, ow] = split_index(i - row * cols, out_h, out_w);
        const long long h = oh * stride + kh - pad;
        const long long w = ow * stride + kw - pad;
        const bool in_image = h >= 0 && h < height && w >= 0 && w < width;
        col[i] = in_image ? x[((img * channels + c) * height + h) * width + w] : T(0);
    }
}

template <typename T>
__global__ void col2im_kernel(const T* __restrict__ col, T* __restrict__ dx,
                              long long n, long long channels, long long height, long long width,
                              long long kernel_h, long long kernel_w, long long stride,
                              long long pad, long long out_h, long long out_w)
{
    const WindowGeometry g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    const long long cols = n * out_h * out_w;
    for (const long long i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);  // plane = img*C + c
        const long long img = plane / channels;
        const long long c = plane % channels;
        // Rows c*KH*KW + k, columns img*OH*OW + o of col: this (img, c)'s windows, row stride cols.
        const T* col_block = col + c * kernel_h * kernel_w * cols + img * out_h * out_w;

        T acc = T(0);
        for_each_window_reading(g, h, w, [&](long long o, long long k) {
            acc += col_block[k * cols + o];
        });
        dx[i] = acc;
    }
}
