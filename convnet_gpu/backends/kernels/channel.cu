// Per-channel work on (n, C, S) arrays (S = H*W, or 1 for flat features): the sums Bias and
// BatchNorm need, and BatchNorm's two elementwise passes (backends/base.py has the NumPy form).
//
// A channel's sum is taken in two deterministic steps, without atomics, so a step gives the
// same bits every time (eager or replayed): channel_partials_kernel gives each (channel, part)
// pair one thread, which adds the elements q = image*S + s of its channel with q = part,
// part + parts, part + 2*parts, ... (neighbouring threads read neighbouring elements), and
// channel_finish_kernel adds a channel's `parts` partial sums in order.
// Compiled with --fmad=false: the elementwise passes round each product and sum on its own, as
// NumPy does, so they equal the NumPy backend's bit for bit; only the sums' order differs.

// mode 0: partial[t] = sum a;  mode 1: also partial_b[t] = sum a*b;  mode 2: sum (a - center[c])^2
template <typename T, typename I>
__global__ void channel_partials_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                        const T* __restrict__ center, T* __restrict__ partial,
                                        T* __restrict__ partial_b, I n, I channels, I spatial,
                                        I parts, int mode)
{
    const I total = n * spatial;
    const I image_step = parts / spatial, s_step = parts - image_step * spatial;
    for (const I t : grid_stride_range(channels * parts)) {
        const I c = t / parts;
        const I first = t - c * parts;
        const T middle = mode == 2 ? center[c] : T(0);
        T sum = T(0), sum_b = T(0);
        I image = first / spatial, s = first - image * spatial;
        for (I q = first; q < total; q += parts) {
            const I index = (image * channels + c) * spatial + s;
            T value = a[index];
            if (mode == 2) {
                value = value - middle;
                value = value * value;
            } else if (mode == 1) {
                const T product = value * b[index];
                sum_b = sum_b + product;
            }
            sum = sum + value;
            image += image_step;  // q + parts = (image + image_step) * S + (s + s_step)
            s += s_step;
            if (s >= spatial) {
                s -= spatial;
                ++image;
            }
        }
        partial[t] = sum;
        if (mode == 1) partial_b[t] = sum_b;
    }
}

// out[c] = sum over p of partial[c*parts + p], in increasing p (and, with_b, out_b likewise).
template <typename T>
__global__ void channel_finish_kernel(const T* __restrict__ partial,
                                      const T* __restrict__ partial_b, T* __restrict__ out,
                                      T* __restrict__ out_b, long long channels, long long parts,
                                      int with_b)
{
    for (const long long c : grid_stride_range(channels)) {
        T sum = T(0), sum_b = T(0);
        for (long long p = 0; p < parts; ++p) {
            sum = sum + partial[c * parts + p];
            if (with_b) sum_b = sum_b + partial_b[c * parts + p];
        }
        out[c] = sum;
        if (with_b) out_b[c] = sum_b;
    }
}

// x_hat = (x - mean[c]) * inv_std[c];  y = x_hat * gamma[c] + beta[c]
template <typename T, typename I>
__global__ void batchnorm_normalize_kernel(const T* __restrict__ x, const T* __restrict__ mean,
                                           const T* __restrict__ inv_std,
                                           const T* __restrict__ gamma, const T* __restrict__ beta,
                                           T* __restrict__ x_hat, T* __restrict__ y, I total,
                                           I channels, I spatial)
{
    for (const I i : grid_stride_range(total)) {
        const I c = (i / spatial) % channels;
        T value = x[i] - mean[c];
        value = value * inv_std[c];
        x_hat[i] = value;
        value = value * gamma[c];
        y[i] = value + beta[c];
    }
}

// dx = scale[c] * (dy - (x_hat * d_gamma[c] + d_beta[c]) * inv_count)
template <typename T, typename I>
__global__ void batchnorm_input_grad_kernel(const T* __restrict__ dy, const T* __restrict__ x_hat,
                                            const T* __restrict__ scale,
                                            const T* __restrict__ d_beta,
                                            const T* __restrict__ d_gamma, double inv_count,
                                            T* __restrict__ dx, I total, I channels, I spatial)
{
    const T per_value = static_cast<T>(inv_count);
    for (const I i : grid_stride_range(total)) {
        const I c = (i / spatial) % channels;
        T value = x_hat[i] * d_gamma[c];
        value = value + d_beta[c];
        value = value * per_value;
        value = dy[i] - value;
        dx[i] = value * scale[c];
    }
}
