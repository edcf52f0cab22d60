// Convolution lowering: im2col and its adjoint col2im (helpers in window.cuh).
//
// Layouts (all C-contiguous):
//   x, dx : (n, C, H, W)
//   col   : (C*KH*KW, n*OH*OW), row = (c*KH + kh)*KW + kw, column = (img*OH + oh)*OW + ow
//   col[row, column] = x[img, c, oh*stride + kh - pad, ow*stride + kw - pad], 0 outside the image.
//
// col2im gathers (one thread per dx element, no atomics) and overwrites dx, adding the
// contributions in (kh, kw) row-major order: the same order as the NumPy backend.

template <typename T, typename I>
__global__ void im2col_kernel(const T* __restrict__ x, T* __restrict__ col,
                              I n, I channels, I height, I width,
                              I kernel_h, I kernel_w, I stride,
                              I pad, I out_h, I out_w)
{
    const I cols = n * out_h * out_w;
    for (const I i : grid_stride_range(channels * kernel_h * kernel_w * cols)) {
        const I row = i / cols;
        const auto [c, kh, kw] = split_index(row, kernel_h, kernel_w);
        const auto [img, oh, ow] = split_index(i - row * cols, out_h, out_w);
        const I h = oh * stride + kh - pad;
        const I w = ow * stride + kw - pad;
        const bool in_image = h >= 0 && h < height && w >= 0 && w < width;
        col[i] = in_image ? x[((img * channels + c) * height + h) * width + w] : T(0);
    }
}

template <typename T, typename I>
__global__ void col2im_kernel(const T* __restrict__ col, T* __restrict__ dx,
                              I n, I channels, I height, I width,
                              I kernel_h, I kernel_w, I stride,
                              I pad, I out_h, I out_w)
{
    const WindowGeometry<I> g{height, width, kernel_h, kernel_w, stride, pad, out_h, out_w};
    const I cols = n * out_h * out_w;
    for (const I i : grid_stride_range(n * channels * height * width)) {
        const auto [plane, h, w] = split_index(i, height, width);  // plane = img*C + c
        const I img = plane / channels;
        const I c = plane % channels;
        // Rows c*KH*KW + k, columns img*OH*OW + o of col: this (img, c)'s windows, row stride cols.
        const T* col_block = col + c * kernel_h * kernel_w * cols + img * out_h * out_w;

        T acc = T(0);
        for_each_window_reading(g, h, w, [&](I o, I k) {
            acc += col_block[k * cols + o];
        });
        dx[i] = acc;
    }
}
