// The optimizers' updates of the flat parameter buffer, one kernel each (backends/updates.py has
// the NumPy form of the same arithmetic, op for op).
//
// Compiled with --fmad=false: every multiply and add rounds on its own, as NumPy's ufuncs do,
// so the CUDA update equals the NumPy one bit for bit on the same inputs (a test checks it).
// The learning rate and Adam's step counter are read from device memory, not passed by value:
// a captured CUDA graph replays this kernel every step, and each replay must see that step's
// values (kernel arguments are frozen at capture).

// SGD with momentum (PyTorch's form); L2 weight decay on the entries whose mask is 1:
//     g = grad + wd * mask * w;  v = momentum * v + g;  step = nesterov ? g + momentum * v : v
//     w = w - lr * step          (momentum 0: step = g, and v is left alone)
template <typename T>
__global__ void sgd_update_kernel(T* __restrict__ w, const T* __restrict__ grad,
                                  T* __restrict__ velocity, const T* __restrict__ decay_mask,
                                  const T* __restrict__ lr, long long size, double momentum,
                                  double weight_decay, int nesterov)
{
    const T mom = static_cast<T>(momentum), wd = static_cast<T>(weight_decay), rate = *lr;
    for (const long long i : grid_stride_range(size)) {
        T g = grad[i];
        if (weight_decay != 0.0) {
            T decay = w[i] * decay_mask[i];
            decay = decay * wd;
            g = decay + g;
        }
        T step = g;
        if (momentum != 0.0) {
            T v = velocity[i] * mom;
            v = v + g;
            velocity[i] = v;
            step = v;
            if (nesterov) {
                T ahead = v * mom;
                step = g + ahead;
            }
        }
        const T change = step * rate;
        w[i] = w[i] - change;
    }
}

// Adam (decoupled = 0, L2 decay inside the gradient) and AdamW (decoupled = 1), PyTorch's form:
//     AdamW first: w = w - lr * wd * mask * w
//     m = m + (1 - beta1) * (g - m);  v = beta2 * v + (1 - beta2) * g * g
//     w = w - lr * m / (sqrt(v) / sqrt(1 - beta2^t) + eps) / (1 - beta1^t)
// t is the step being taken (the device counter, already advanced for it).
template <typename T>
__global__ void adam_update_kernel(T* __restrict__ w, const T* __restrict__ grad,
                                   T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                                   const T* __restrict__ decay_mask, const T* __restrict__ lr,
                                   const long long* __restrict__ steps, long long size,
                                   double beta1, double beta2, double eps, double weight_decay,
                                   int decoupled)
{
    const double t = static_cast<double>(*steps);
    const T rate = *lr, wd = static_cast<T>(weight_decay);
    const T keep1 = static_cast<T>(1.0 - beta1), keep2 = static_cast<T>(1.0 - beta2);
    const T b2 = static_cast<T>(beta2), epsilon = static_cast<T>(eps);
    const T correction1 = static_cast<T>(1.0 - pow(beta1, t));
    const T correction2 = static_cast<T>(sqrt(1.0 - pow(beta2, t)));
    for (const long long i : grid_stride_range(size)) {
        T weight = w[i];
        T g = grad[i];
        if (weight_decay != 0.0) {
            T decay = weight * decay_mask[i];
            if (decoupled) {
                decay = decay * rate;
                decay = decay * wd;
                weight = weight - decay;
            } else {
                decay = decay * wd;
                g = decay + g;
            }
        }
        T m = exp_avg[i];
        T delta = g - m;
        delta = delta * keep1;
        m = m + delta;
        T v = exp_avg_sq[i] * b2;
        T square = g * g;
        square = square * keep2;
        v = v + square;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T denominator = sqrt(v);
        denominator = denominator / correction2;
        denominator = denominator + epsilon;
        T change = m / denominator;
        change = change * rate;
        change = change / correction1;
        w[i] = weight - change;
    }
}

// out[0] = table[*index], the index clamped into the table: the learning rate of the step the
// device counter names, read by the update kernel of that step (one thread does it all).
template <typename T>
__global__ void select_kernel(T* __restrict__ out, const T* __restrict__ table,
                              const long long* __restrict__ index, long long size)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        long long i = *index;
        i = i < 0 ? 0 : (i >= size ? size - 1 : i);
        out[0] = table[i];
    }
}
