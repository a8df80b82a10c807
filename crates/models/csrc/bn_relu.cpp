// Batch normalisation, residual addition and ReLU in two passes forward and two backward,
// for training on the CPU: y = max(0, γ·(x − μ_B)/√(σ²_B + ε) + β [+ r]).
//
// libtorch has no such operator: done op by op, BN's statistics, its normalisation, the
// addition and the ReLU each read and write the whole activation, and so do ReLU's backward
// and BN's two backward passes. Here the forward reads x twice (statistics, then the output,
// with r) and writes y once; the backward reads dy, y and x twice (reduction, then dx, and
// the shortcut's gradient g = dy·[y > 0] when there is an r). What it saves for backward is
// what the unfused graph keeps anyway: x (BN's input) and y (the next convolution's input).
//
// Tensors are [N, C, H, W] with channels-last strides, i.e. rows of C values, one row per
// (n, h, w): every loop runs over rows, each vectorised across the C channels. fp32 or bf16
// activations (γ, β, the running statistics and every accumulation in fp32/fp64, as
// libtorch's mixed-type batch norm); the kernels are compiled for x86-64-v4 (AVX-512),
// x86-64-v3 (AVX2) and baseline x86-64, the best the CPU has chosen at run time. Work is
// split over libtorch's intra-op threads (at::parallel_for).
//
// Called from Rust (crates/models/src/fused.rs) through `extern "C"` functions that take and
// return libtorch's `at::Tensor*`, as tch's own C API does; a C++ exception becomes an error
// string for Rust to report.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- element access: fp32 as is, bf16 as its 16 bits, one value or a vector of them -------

// A vector of N floats in one register of the instruction set: 16 (AVX-512), 8 (AVX2), 4
// (SSE). GCC vector extensions: a vector wider than the registers would be split, and its
// comparisons lane by lane into scalar code, which is why each version has its own width.
typedef float f16v __attribute__((vector_size(64)));
typedef float f8v __attribute__((vector_size(32)));
typedef float f4v __attribute__((vector_size(16)));
// The integer vectors with V's lanes: 32-bit unsigned and signed, 16-bit.
template <typename V>
struct Ints;
#define INTS(V, BYTES)                                                                             \
  template <>                                                                                      \
  struct Ints<V> {                                                                                 \
    typedef uint32_t u32 __attribute__((vector_size(BYTES)));                                      \
    typedef int32_t i32 __attribute__((vector_size(BYTES)));                                       \
    typedef uint16_t u16 __attribute__((vector_size(BYTES / 2)));                                  \
  };
INTS(f16v, 64)
INTS(f8v, 32)
INTS(f4v, 16)
template <typename V>
using U32 = typename Ints<V>::u32;
template <typename V>
using I32 = typename Ints<V>::i32;
template <typename V>
using U16 = typename Ints<V>::u16;
template <typename V>
constexpr int64_t kLanes = sizeof(V) / sizeof(float);
// Helpers are inlined into each version, so that they take its registers.
#define INLINE __attribute__((always_inline)) inline

// `load(p, V{})`: one value (V = float) or a vector from p, as float; `store(p, v)` the
// other way. Each kernel below is written once, over V, and runs with the version's vector on
// chunks of its width and with float on the rest.
INLINE float load(const float* p, float) { return *p; }
INLINE float load(const uint16_t* p, float) {
  uint32_t u = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename V>
INLINE V load(const float* p, V) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
INLINE V load(const uint16_t* p, V) {
  U16<V> h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<V>(__builtin_convertvector(h, U32<V>) << 16);
}
INLINE void store(float* p, float v) { *p = v; }
template <typename V>
INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// round to nearest even, NaN kept a (quiet) NaN: what c10::BFloat16 does
INLINE void store(uint16_t* p, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  *p = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : rounded);
}
template <typename V>
INLINE void store(uint16_t* p, V v) {
  const U32<V> u = reinterpret_cast<U32<V>>(v);
  const U32<V> rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  // compared as signed (both sides are below 2³¹): x86 has no unsigned vector compare before
  // AVX-512
  const U32<V> nan =
      reinterpret_cast<U32<V>>(reinterpret_cast<I32<V>>(u & 0x7fffffffu) > 0x7f800000);
  const U16<V> h = __builtin_convertvector((rounded & ~nan) | (0x7fc0u & nan), U16<V>);
  std::memcpy(p, &h, sizeof h);
}

// As libtorch's ReLU and its backward: a NaN goes through (so that a diverged run's loss is
// NaN), and the gradient passes where the output is not ≤ 0. On vectors, a mask and a bitwise
// and instead of a vector `?:`.
INLINE float relu(float v) { return v < 0.f ? 0.f : v; }
INLINE float pass(float y, float dy) { return y <= 0.f ? 0.f : dy; }
// `v` with the lanes where `zero` is set (all ones) cleared
template <typename V, typename M>
INLINE V clear(V v, M zero) {
  return reinterpret_cast<V>(reinterpret_cast<U32<V>>(v) & ~reinterpret_cast<U32<V>>(zero));
}
template <typename V>
INLINE V relu(V v) {
  return clear(v, v < 0.f);
}
template <typename V>
INLINE V pass(V y, V dy) {
  return clear(dy, y <= 0.f);
}

// Rows are summed in float over blocks of this many rows, each block then added in double:
// vector-wide float adds, and no precision lost over the 131,072 rows of a CIFAR batch.
constexpr int64_t kBlock = 64;

// ---- the two loops every kernel runs -----------------------------------------------------------
// Over rows [r0, r1) of C channels, in chunks of V's width, then one channel at a time for
// the rest (CIFAR's 16, 32 and 64 channels per replica have none). `o` is the element's
// offset, `c` its channel, and the last argument says the width (V{} or 0.f).

// body(o, c, V{}) for every element
template <typename V, typename Body>
INLINE void each_element(int64_t r0, int64_t r1, int64_t C, const Body& body) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t c = 0;
    for (; c + kLanes<V> <= C; c += kLanes<V>) body(r * C + c, c, V{});
    for (; c < C; ++c) body(r * C + c, c, 0.f);
  }
}

// sum_a[c] += Σ a, sum_b[c] += Σ b over the rows, where (a, b) = terms(o, c, V{})
template <typename V, typename Terms>
INLINE void two_sums_over_rows(int64_t r0, int64_t r1, int64_t C, double* __restrict sum_a,
                               double* __restrict sum_b, const Terms& terms) {
  for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
    const int64_t b1 = std::min(r1, b0 + kBlock);
    int64_t c = 0;
    for (; c + kLanes<V> <= C; c += kLanes<V>) {
      V a{}, b{};
      for (int64_t r = b0; r < b1; ++r) {
        const auto [ta, tb] = terms(r * C + c, c, V{});
        a += ta;
        b += tb;
      }
      for (int64_t l = 0; l < kLanes<V>; ++l) {
        sum_a[c + l] += a[l];
        sum_b[c + l] += b[l];
      }
    }
    for (; c < C; ++c) {
      float a = 0.f, b = 0.f;
      for (int64_t r = b0; r < b1; ++r) {
        const auto [ta, tb] = terms(r * C + c, c, 0.f);
        a += ta;
        b += tb;
      }
      sum_a[c] += a;
      sum_b[c] += b;
    }
  }
}

// Lambdas inlined into each instruction set's clone, like the helpers.
#define INLINE_LAMBDA __attribute__((always_inline))

// ---- kernels -----------------------------------------------------------------------------------

// sum[c] += Σ x, sq[c] += Σ x²
template <typename V, typename T>
INLINE void stats_rows(const T* __restrict x, int64_t r0, int64_t r1, int64_t C,
                       double* __restrict sum, double* __restrict sq) {
  two_sums_over_rows<V>(r0, r1, C, sum, sq, [&](int64_t o, int64_t, auto w) INLINE_LAMBDA {
    const auto v = load(x + o, w);
    return std::pair{v, v * v};
  });
}

// y = max(0, x·scale + shift [+ r])
template <typename V, typename T, bool kResidual>
INLINE void apply_rows(const T* __restrict x, const T* __restrict res, T* __restrict y,
                       int64_t r0, int64_t r1, int64_t C, const float* __restrict scale,
                       const float* __restrict shift) {
  each_element<V>(r0, r1, C, [&](int64_t o, int64_t c, auto w) INLINE_LAMBDA {
    auto v = load(x + o, w) * load(scale + c, w) + load(shift + c, w);
    if (kResidual) v += load(res + o, w);
    store(y + o, relu(v));
  });
}

// g = dy·[y > 0]: sg[c] += Σ g, sgx[c] += Σ g·(x − μ)
template <typename V, typename T>
INLINE void reduce_rows(const T* __restrict dy, const T* __restrict y, const T* __restrict x,
                        int64_t r0, int64_t r1, int64_t C, const float* __restrict mean,
                        double* __restrict sg, double* __restrict sgx) {
  two_sums_over_rows<V>(r0, r1, C, sg, sgx, [&](int64_t o, int64_t c, auto w) INLINE_LAMBDA {
    const auto g = pass(load(y + o, w), load(dy + o, w));
    return std::pair{g, g * (load(x + o, w) - load(mean + c, w))};
  });
}

// dx = a·g + k·x + b, and dr = g with a residual
template <typename V, typename T, bool kResidual>
INLINE void grad_rows(const T* __restrict dy, const T* __restrict y, const T* __restrict x,
                      T* __restrict dx, T* __restrict dr, int64_t r0, int64_t r1, int64_t C,
                      const float* __restrict a, const float* __restrict k,
                      const float* __restrict b) {
  each_element<V>(r0, r1, C, [&](int64_t o, int64_t c, auto w) INLINE_LAMBDA {
    const auto g = pass(load(y + o, w), load(dy + o, w));
    store(dx + o, load(a + c, w) * g + load(k + c, w) * load(x + o, w) + load(b + c, w));
    if (kResidual) store(dr + o, g);
  });
}

// ---- one version of each kernel per instruction set --------------------------------------------
// x86-64-v4 (AVX-512), x86-64-v3 (AVX2, FMA) and baseline x86-64; the always-inline bodies
// above are compiled into each. The best the CPU has runs, unless resnet_fused_set_isa asks
// for a lower one (fused.rs does for RESNET_FUSED_ISA): so that every version can be tested,
// and timed, on one machine.

#define KERNELS(ns, TARGET, V)                                                                     \
  namespace ns {                                                                                   \
  TARGET void stats_f32(const float* x, int64_t r0, int64_t r1, int64_t C, double* sum,            \
                        double* sq) {                                                              \
    stats_rows<V>(x, r0, r1, C, sum, sq);                                                          \
  }                                                                                                \
  TARGET void stats_bf16(const uint16_t* x, int64_t r0, int64_t r1, int64_t C, double* sum,        \
                         double* sq) {                                                             \
    stats_rows<V>(x, r0, r1, C, sum, sq);                                                          \
  }                                                                                                \
  TARGET void apply_f32(const float* x, const float* res, float* y, int64_t r0, int64_t r1,        \
                        int64_t C, const float* scale, const float* shift) {                       \
    if (res)                                                                                       \
      apply_rows<V, float, true>(x, res, y, r0, r1, C, scale, shift);                              \
    else                                                                                           \
      apply_rows<V, float, false>(x, res, y, r0, r1, C, scale, shift);                             \
  }                                                                                                \
  TARGET void apply_bf16(const uint16_t* x, const uint16_t* res, uint16_t* y, int64_t r0,          \
                         int64_t r1, int64_t C, const float* scale, const float* shift) {          \
    if (res)                                                                                       \
      apply_rows<V, uint16_t, true>(x, res, y, r0, r1, C, scale, shift);                           \
    else                                                                                           \
      apply_rows<V, uint16_t, false>(x, res, y, r0, r1, C, scale, shift);                          \
  }                                                                                                \
  TARGET void reduce_f32(const float* dy, const float* y, const float* x, int64_t r0,              \
                         int64_t r1, int64_t C, const float* mean, double* sg, double* sgx) {      \
    reduce_rows<V>(dy, y, x, r0, r1, C, mean, sg, sgx);                                            \
  }                                                                                                \
  TARGET void reduce_bf16(const uint16_t* dy, const uint16_t* y, const uint16_t* x, int64_t r0,    \
                          int64_t r1, int64_t C, const float* mean, double* sg, double* sgx) {     \
    reduce_rows<V>(dy, y, x, r0, r1, C, mean, sg, sgx);                                            \
  }                                                                                                \
  TARGET void grad_f32(const float* dy, const float* y, const float* x, float* dx, float* dr,      \
                       int64_t r0, int64_t r1, int64_t C, const float* a, const float* k,          \
                       const float* b) {                                                           \
    if (dr)                                                                                        \
      grad_rows<V, float, true>(dy, y, x, dx, dr, r0, r1, C, a, k, b);                             \
    else                                                                                           \
      grad_rows<V, float, false>(dy, y, x, dx, dr, r0, r1, C, a, k, b);                            \
  }                                                                                                \
  TARGET void grad_bf16(const uint16_t* dy, const uint16_t* y, const uint16_t* x, uint16_t* dx,    \
                        uint16_t* dr, int64_t r0, int64_t r1, int64_t C, const float* a,           \
                        const float* k, const float* b) {                                          \
    if (dr)                                                                                        \
      grad_rows<V, uint16_t, true>(dy, y, x, dx, dr, r0, r1, C, a, k, b);                          \
    else                                                                                           \
      grad_rows<V, uint16_t, false>(dy, y, x, dx, dr, r0, r1, C, a, k, b);                         \
  }                                                                                                \
  }

KERNELS(v4, __attribute__((target("arch=x86-64-v4"))), f16v)
KERNELS(v3, __attribute__((target("arch=x86-64-v3"))), f8v)
KERNELS(baseline, , f4v)

// The kernels of one instruction set.
struct Kernels {
  decltype(&baseline::stats_f32) stats_f32;
  decltype(&baseline::stats_bf16) stats_bf16;
  decltype(&baseline::apply_f32) apply_f32;
  decltype(&baseline::apply_bf16) apply_bf16;
  decltype(&baseline::reduce_f32) reduce_f32;
  decltype(&baseline::reduce_bf16) reduce_bf16;
  decltype(&baseline::grad_f32) grad_f32;
  decltype(&baseline::grad_bf16) grad_bf16;
};
#define KERNEL_TABLE(ns)                                                                           \
  Kernels {                                                                                        \
    ns::stats_f32, ns::stats_bf16, ns::apply_f32, ns::apply_bf16, ns::reduce_f32,                  \
        ns::reduce_bf16, ns::grad_f32, ns::grad_bf16                                               \
  }

// Instruction sets, in the order of kTables (and of the Rust enum `FusedIsa`).
enum Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };
const Kernels kTables[] = {KERNEL_TABLE(baseline), KERNEL_TABLE(v3), KERNEL_TABLE(v4)};

// Whether this CPU runs `isa`'s version (the features GCC's x86-64-v3 / v4 levels add that
// the kernels may use).
bool cpu_has(int isa) {
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512cd");
  return isa == kBaseline || (isa == kAvx2 && v3) || (isa == kAvx512 && v4);
}

// The best the CPU has.
int first_isa() {
  for (int isa = kAvx512; isa > kBaseline; --isa)
    if (cpu_has(isa)) return isa;
  return kBaseline;
}

std::atomic<int>& current_isa() {
  static std::atomic<int> isa{first_isa()};
  return isa;
}

const Kernels& kernels() { return kTables[current_isa().load(std::memory_order_relaxed)]; }

// ---- helpers -----------------------------------------------------------------------------------

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}
template <typename T>
T* mut_ptr(at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// Rows of a parallel loop: enough per task that a thread's start-up is paid back.
constexpr int64_t kGrain = 256;

// Σ over rows of two per-channel sums, computed by `body(r0, r1, sum_a, sum_b)` on each
// thread's rows and added up in double.
template <typename Body>
std::vector<double> two_sums(int64_t rows, int64_t C, const Body& body) {
  const int64_t threads = at::get_num_threads();
  std::vector<double> partial(static_cast<size_t>(threads * 2 * C), 0.0);
  at::parallel_for(0, rows, kGrain, [&](int64_t r0, int64_t r1) {
    double* mine = partial.data() + at::get_thread_num() * 2 * C;
    body(r0, r1, mine, mine + C);
  });
  std::vector<double> total(static_cast<size_t>(2 * C), 0.0);
  for (int64_t t = 0; t < threads; ++t)
    for (int64_t i = 0; i < 2 * C; ++i) total[i] += partial[t * 2 * C + i];
  return total;
}

// `t` as a channels-last dense tensor (itself when it already is).
at::Tensor channels_last(const at::Tensor& t) {
  return t.contiguous(at::MemoryFormat::ChannelsLast);
}

// ---- the autograd function ---------------------------------------------------------------------

struct BnAddRelu : public torch::autograd::Function<BnAddRelu> {
  // x [N, C, H, W] (channels-last, fp32 or bf16), weight/bias/running_* [C] fp32, residual
  // absent or shaped as x. Returns y shaped and typed as x, channels-last.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_in, const at::Tensor& weight,
                            const at::Tensor& bias, const std::optional<at::Tensor>& residual_opt,
                            at::Tensor running_mean, at::Tensor running_var, double momentum,
                            double eps) {
    const at::Tensor x = channels_last(x_in);
    const at::Tensor residual_in = residual_opt.value_or(at::Tensor());
    const bool has_res = residual_in.defined();
    const at::Tensor res = has_res ? channels_last(residual_in.to(x.scalar_type())) : at::Tensor();
    const int64_t C = x.size(1);
    const int64_t rows = x.numel() / C;
    TORCH_CHECK(rows > 1, "batch norm needs more than one value per channel, got ", x.sizes());

    // statistics of the batch, per channel
    const bool bf = is_bf16(x);
    const Kernels& kern = kernels();
    auto sums = two_sums(rows, C, [&](int64_t r0, int64_t r1, double* s, double* q) {
      if (bf)
        kern.stats_bf16(ptr<uint16_t>(x), r0, r1, C, s, q);
      else
        kern.stats_f32(ptr<float>(x), r0, r1, C, s, q);
    });
    auto opts = x.options().dtype(at::kFloat).memory_format(at::MemoryFormat::Contiguous);
    at::Tensor mean = at::empty({C}, opts), invstd = at::empty({C}, opts);
    at::Tensor scale = at::empty({C}, opts), shift = at::empty({C}, opts);
    const at::Tensor w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
    std::vector<double> var(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      const double m = sums[c] / rows;
      var[c] = std::max(0.0, sums[C + c] / rows - m * m);
      const double is = 1.0 / std::sqrt(var[c] + eps);
      mean.data_ptr<float>()[c] = static_cast<float>(m);
      invstd.data_ptr<float>()[c] = static_cast<float>(is);
      const double sc = w.data_ptr<float>()[c] * is;
      scale.data_ptr<float>()[c] = static_cast<float>(sc);
      shift.data_ptr<float>()[c] = static_cast<float>(b.data_ptr<float>()[c] - m * sc);
    }

    // y = max(0, x·scale + shift [+ r])
    at::Tensor y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    at::parallel_for(0, rows, kGrain, [&](int64_t r0, int64_t r1) {
      if (bf)
        kern.apply_bf16(ptr<uint16_t>(x), has_res ? ptr<uint16_t>(res) : nullptr,
                        mut_ptr<uint16_t>(y), r0, r1, C, scale.data_ptr<float>(),
                        shift.data_ptr<float>());
      else
        kern.apply_f32(ptr<float>(x), has_res ? ptr<float>(res) : nullptr, mut_ptr<float>(y),
                       r0, r1, C, scale.data_ptr<float>(), shift.data_ptr<float>());
    });

    // running averages, as libtorch: the unbiased variance of the batch
    if (running_mean.defined() && running_var.defined()) {
      at::NoGradGuard no_grad;
      at::Tensor unbiased = at::empty({C}, opts);
      for (int64_t c = 0; c < C; ++c)
        unbiased.data_ptr<float>()[c] = static_cast<float>(var[c] * rows / (rows - 1));
      running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1.0 - momentum).add_(unbiased.to(running_var.scalar_type()), momentum);
    }

    ctx->save_for_backward({x, y, w, mean, invstd});
    ctx->saved_data["has_res"] = has_res;
    ctx->saved_data["weight_type"] = static_cast<int64_t>(weight.scalar_type());
    ctx->saved_data["res_type"] =
        static_cast<int64_t>(has_res ? residual_in.scalar_type() : x.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1], &w = saved[2], &mean = saved[3],
                     &invstd = saved[4];
    const bool has_res = ctx->saved_data["has_res"].toBool();
    const auto weight_type = static_cast<at::ScalarType>(ctx->saved_data["weight_type"].toInt());
    const auto res_type = static_cast<at::ScalarType>(ctx->saved_data["res_type"].toInt());
    const at::Tensor dy = channels_last(grads[0].to(x.scalar_type()));
    const int64_t C = x.size(1);
    const int64_t rows = x.numel() / C;
    const bool bf = is_bf16(x);
    const Kernels& kern = kernels();

    // Σ g and Σ g·(x − μ) per channel, g = dy·[y > 0]
    auto sums = two_sums(rows, C, [&](int64_t r0, int64_t r1, double* s, double* q) {
      if (bf)
        kern.reduce_bf16(ptr<uint16_t>(dy), ptr<uint16_t>(y), ptr<uint16_t>(x), r0, r1, C,
                         mean.data_ptr<float>(), s, q);
      else
        kern.reduce_f32(ptr<float>(dy), ptr<float>(y), ptr<float>(x), r0, r1, C,
                        mean.data_ptr<float>(), s, q);
    });

    // dβ = Σ g, dγ = Σ g·x̂; dx = γ·σ⁻¹·(g − Σg/M − x̂·Σg·x̂/M) = a·g + k·x + b
    auto opts = mean.options();
    at::Tensor dgamma = at::empty({C}, opts), dbeta = at::empty({C}, opts);
    at::Tensor a = at::empty({C}, opts), k = at::empty({C}, opts), b = at::empty({C}, opts);
    for (int64_t c = 0; c < C; ++c) {
      const double is = invstd.data_ptr<float>()[c], m = mean.data_ptr<float>()[c];
      const double sg = sums[c], sgx = sums[C + c];
      dbeta.data_ptr<float>()[c] = static_cast<float>(sg);
      dgamma.data_ptr<float>()[c] = static_cast<float>(sgx * is);
      const double ac = w.data_ptr<float>()[c] * is;
      const double kc = -ac * is * is * sgx / rows;
      a.data_ptr<float>()[c] = static_cast<float>(ac);
      k.data_ptr<float>()[c] = static_cast<float>(kc);
      b.data_ptr<float>()[c] = static_cast<float>(-ac * sg / rows - kc * m);
    }
    at::Tensor dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
    at::Tensor dr = has_res ? at::empty_like(x, at::MemoryFormat::ChannelsLast) : at::Tensor();
    at::parallel_for(0, rows, kGrain, [&](int64_t r0, int64_t r1) {
      if (bf)
        kern.grad_bf16(ptr<uint16_t>(dy), ptr<uint16_t>(y), ptr<uint16_t>(x),
                       mut_ptr<uint16_t>(dx), has_res ? mut_ptr<uint16_t>(dr) : nullptr, r0, r1,
                       C, a.data_ptr<float>(), k.data_ptr<float>(), b.data_ptr<float>());
      else
        kern.grad_f32(ptr<float>(dy), ptr<float>(y), ptr<float>(x), mut_ptr<float>(dx),
                      has_res ? mut_ptr<float>(dr) : nullptr, r0, r1, C, a.data_ptr<float>(),
                      k.data_ptr<float>(), b.data_ptr<float>());
    });
    if (has_res && dr.scalar_type() != res_type) dr = dr.to(res_type);
    return {dx,           dgamma.to(weight_type), dbeta.to(weight_type), dr, at::Tensor(),
            at::Tensor(), at::Tensor(),           at::Tensor()};
  }
};

char* error_copy(const char* what) {
  char* copy = static_cast<char*>(std::malloc(std::strlen(what) + 1));
  if (copy) std::strcpy(copy, what);
  return copy;
}

}  // namespace

extern "C" {

// *out = the fused BN(–add)–ReLU of *x in training mode (batch statistics; the running ones
// updated in place), with autograd. `residual` may be null. Returns null, or an error message
// the caller frees with resnet_fused_free_error.
char* resnet_fused_bn_add_relu(at::Tensor** out, const at::Tensor* x, const at::Tensor* weight,
                               const at::Tensor* bias, const at::Tensor* residual,
                               at::Tensor* running_mean, at::Tensor* running_var,
                               double momentum, double eps) {
  try {
    TORCH_CHECK(x->device().is_cpu() && x->dim() == 4, "expected a 4-d CPU tensor, got ",
                x->sizes(), " on ", x->device());
    TORCH_CHECK(x->scalar_type() == at::kFloat || x->scalar_type() == at::kBFloat16,
                "expected fp32 or bf16 activations, got ", x->scalar_type());
    std::optional<at::Tensor> res;
    if (residual) res = *residual;
    at::Tensor y = BnAddRelu::apply(*x, *weight, *bias, res,
                                    *running_mean, *running_var, momentum, eps);
    *out = new at::Tensor(std::move(y));
    return nullptr;
  } catch (const std::exception& e) {
    return error_copy(e.what());
  }
}

void resnet_fused_free_error(char* message) { std::free(message); }

// The instruction set the kernels run with: 0 baseline, 1 AVX2, 2 AVX-512.
int resnet_fused_isa() { return current_isa().load(); }

// Whether this CPU can run `isa`'s kernels.
bool resnet_fused_cpu_has(int isa) { return isa >= kBaseline && isa <= kAvx512 && cpu_has(isa); }

// Runs the kernels with `isa` from now on, when the CPU has it; returns whether it does.
bool resnet_fused_set_isa(int isa) {
  if (!resnet_fused_cpu_has(isa)) return false;
  current_isa().store(isa);
  return true;
}

}  // extern "C"
