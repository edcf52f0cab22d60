// Per-channel work on (n, C, S) arrays (S = H*W, or 1 for flat features): the sums Bias and
// BatchNorm need, and BatchNorm's two elementwise passes (backends/base.py has the NumPy form).
//
// A channel's sum is taken in three deterministic steps, without atomics, so a step gives the
// same bits every time (eager or replayed): channel_partials_kernel gives each (channel, part)
// pair one thread, which adds the elements q = image*S + s of its channel with q = part,
// part + parts, part + 2*parts, ... (neighbouring threads read neighbouring elements);
// channel_regroup_kernel adds each channel's partials in `lanes` strided groups, and
// channel_finish_kernel adds a channel's groups in order.
// Compiled with --fmad=false: the elementwise passes round each product and sum on its own, as
// NumPy does, so they equal the NumPy backend's bit for bit; only the sums' order differs.

// One term of a channel sum: a, a*b into *second (mode 1), or (a - middle)^2 (mode 2).
template <typename T, typename I>
__device__ __forceinline__ T channel_term(const T* a, const T* b, I index, int mode, T middle,
                                          T& second)
{
    T value = a[index];
    if (mode == 2) {
        value = value - middle;
        return value * value;
    }
    if (mode == 1) {
        const T product = value * b[index];
        second = second + product;
    }
    return value;
}

// mode 0: partial[t] = sum a;  mode 1: also partial_b[t] = sum a*b;  mode 2: sum (a - center[c])^2
// Four accumulators, each adding every fourth of the thread's terms, keep four loads in flight
// (a single running sum waits for each load in turn); they are added in a fixed order.
template <typename T, typename I>
__global__ void channel_partials_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                        const T* __restrict__ center, T* __restrict__ partial,
                                        T* __restrict__ partial_b, I n, I channels, I spatial,
                                        I parts, int mode)
{
    const I total = n * spatial;
    for (const I t : grid_stride_range(channels * parts)) {
        const I c = t / parts;
        const T middle = mode == 2 ? center[c] : T(0);
        T sum[4] = {T(0), T(0), T(0), T(0)}, sum_b[4] = {T(0), T(0), T(0), T(0)};
        I q = t - c * parts;  // this thread's first term: q = image * S + s
        for (; q < total; q += 4 * parts) {
            for (int k = 0; k < 4; ++k) {
                const I term = q + k * parts;
                if (term < total) {
                    const I image = term / spatial;
                    const I index = (image * channels + c) * spatial + (term - image * spatial);
                    sum[k] = sum[k] + channel_term(a, b, index, mode, middle, sum_b[k]);
                }
            }
        }
        partial[t] = (sum[0] + sum[1]) + (sum[2] + sum[3]);
        if (mode == 1) partial_b[t] = (sum_b[0] + sum_b[1]) + (sum_b[2] + sum_b[3]);
    }
}

// The first of two steps that add a channel's partial sums: lane l of channel c adds the
// partials p = l, l + lanes, l + 2*lanes, ... into middle[c*lanes + l] (with_b: middle_b too),
// so `lanes` threads per channel share the work, reading neighbouring partials together.
template <typename T>
__global__ void channel_regroup_kernel(const T* __restrict__ partial,
                                       const T* __restrict__ partial_b, T* __restrict__ middle,
                                       T* __restrict__ middle_b, long long channels,
                                       long long parts, long long lanes, int with_b)
{
    for (const long long t : grid_stride_range(channels * lanes)) {
        const long long c = t / lanes, lane = t - c * lanes;
        T sum = T(0), sum_b = T(0);
        for (long long p = lane; p < parts; p += lanes) {
            sum = sum + partial[c * parts + p];
            if (with_b) sum_b = sum_b + partial_b[c * parts + p];
        }
        middle[t] = sum;
        if (with_b) middle_b[t] = sum_b;
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

// BatchNorm's per-channel statistics in one pass, rounded as channel_ops.batchnorm_statistics
// (each product and sum on its own: compiled without fused multiply-add). mode 0: var is a
// variance; 1: var is the batch's centered sum of squares, made its biased variance; 2: that,
// and the running statistics move towards the batch's (keep = 1 - momentum, mean_step =
// momentum, var_step = momentum * count / (count - 1)). Then inv_std = 1 / sqrt(var + eps).
template <typename T>
__global__ void batchnorm_statistics_kernel(const T* __restrict__ mean, T* __restrict__ var,
                                            T* __restrict__ inv_std, T* __restrict__ running_mean,
                                            T* __restrict__ running_var, double per_value,
                                            double keep, double mean_step, double var_step,
                                            double eps, long long channels, int mode)
{
    for (const long long c : grid_stride_range(channels)) {
        T variance = var[c];
        if (mode >= 1) {
            variance = variance * static_cast<T>(per_value);
            var[c] = variance;
        }
        if (mode == 2) {
            T step = mean[c] * static_cast<T>(mean_step);
            T kept = running_mean[c] * static_cast<T>(keep);
            running_mean[c] = kept + step;
            step = variance * static_cast<T>(var_step);
            kept = running_var[c] * static_cast<T>(keep);
            running_var[c] = kept + step;
        }
        T std = variance + static_cast<T>(eps);
        std = sqrt(std);
        inv_std[c] = T(1) / std;
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
