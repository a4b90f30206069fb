// The learned-optimizer cell's step (features, GRU then MLP of every path,
// the direction) in one pass per coordinate, for XLA:CPU through the FFI
// (lopt/fused_cell.py).
//
// The maths is `lopt.cells` (the preprocessor, `cells._Path`: hk.GRU then
// hk.nets.MLP, and the cell's direction) on N coordinates (all of a
// population's, laid end to end, under `vmap`):
//
//   g    [N]     the gradient (the cell's input)
//   s    [N]     Optim4RL's second moment, with `second_moment` only
//   h_p  [N, H]  path p's GRU state, Haiku's layout (one buffer a path)
//   d    [N]     the update direction
//   hn_p [N, H]  path p's new state
//
// Path p's input u_p is g, but Optim4RL's magnitude path sees g^2 (or s);
// its features are the preprocessor's of u_p (`features`); each path's MLP
// outputs (O of them) enter the direction (`direction`). Each path's
// weights are packed in one row of `params[P, S]`:
//   w_i [F, 3H], w_h [H, 3H], b [3H], then per MLP layer W [K, M], b [M]
// (Haiku's own layouts, flattened row-major; `dims` = the MLP widths, the
// last one O).
//
// XLA:CPU runs the Haiku module as thin matmuls ([N, 2..16] x [2..16, 24])
// whose [N, 24] intermediates go through memory between kernels; here a tile
// of LANES coordinates goes through the whole step in registers and L1, and
// only g (s), h, d and hn touch memory.
//
// `LoptCellForward(params, g, [s,] h_0..h_{P-1}) -> (d, hn_0..hn_{P-1})`.
// `LoptCellBackward(params, g, ct_d, [s,] h_0.., ct_hn_0..) -> (ct_params,
// ct_g, [ct_s,] ct_h_0..)` takes the cotangents of d and hn and returns
// those of params (summed over all coordinates), g, s and h; it recomputes
// the forward of each tile (no residuals kept between the two calls).
//
// A tile's state is read and written across its LANES rows of H (a
// transpose: in registers for H = 2, 4, 8, 16 with AVX-512, else gathers
// and scatters, or element by element).
//
// Vectors are GCC's vector extensions, LANES floats wide: 16 with AVX-512
// (which also gives the scale, rounding, permute and gather instructions used
// below), 8 with AVX, else 4; lopt/fused_cell.py builds for the machine.
//
// Work is split in chunks of at most CHUNK coordinates, all paths of a
// chunk together, run on XLA's intra-op thread pool. Each chunk sums its
// own parameter cotangent and the chunks are added in a fixed order, so
// results do not depend on the number of threads or on scheduling.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#if defined(__SSE__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int LANES = 16;
#elif defined(__AVX__)
constexpr int LANES = 8;
#else
constexpr int LANES = 4;
#endif
typedef float V __attribute__((vector_size(LANES * 4)));
typedef int32_t VI __attribute__((vector_size(LANES * 4)));

constexpr int64_t CHUNK = 2048;  // coordinates of a work item
constexpr int GROUP = 8;         // tiles whose weights' cotangent sums at once
constexpr int MAXD = 64;         // largest hidden size and MLP width
constexpr int MAXF = 8;          // largest number of input features
constexpr int MAXL = 8;          // most MLP layers
constexpr int MAXP = 2;          // most paths

// Inlined wherever called, so that sizes known there (`Sizes`) reach its
// loops.
#define LOPT_INLINE inline __attribute__((always_inline))

enum Activation { RELU = 0, TANH = 1, SILU = 2 };
// lopt.cells.CELLS and lopt.preprocessing.PREPROCESSORS, by number
// (lopt/fused_cell.py: CELLS, PREPROCESSORS).
enum Cell { OPTIM4RL = 0, L2LGD2 = 1, LINEAR = 2 };
enum Preprocessor { IDENTITY = 0, LOG_SIGN = 1, ANDRYCHOWICZ = 2 };

inline V splat(float s) { return V{} + s; }

// max and min that keep a NaN in `a` (as jnp.maximum / jnp.minimum), so a
// non-finite input stays non-finite through relu and exp's range clamp.
inline V vmax(V a, V b) { return a < b ? b : a; }
inline V vmin(V a, V b) { return a > b ? b : a; }

// c[0] x^(K-1) + c[1] x^(K-2) + ... + c[K-1], by Horner's rule.
template <size_t K>
inline V horner(V x, const float (&c)[K]) {
  V p = splat(c[0]);
  for (size_t i = 1; i < K; ++i) p = p * x + c[i];
  return p;
}

// exp(x) = 2^n (1 + q): x = n ln2 + r with n an integer and |r| <= ln2 / 2,
// q = exp(r) - 1 by its Taylor series to r^7 (truncation < 3e-9 relative).
// Returns q and n; `scale2(v, n)` is v 2^n.
inline V expm1_reduced(V x, V& n) {
#if defined(__AVX512F__)
  n = (V)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  x = vmin(vmax(x, splat(-87.3f)), splat(88.3f));
  const float magic = 12582912.f;  // 1.5 * 2^23: rounds to an integer
  n = (x * 1.44269504088896341f + magic) - magic;
#endif
  // ln2 split in two so that n * hi is exact.
  V r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  static constexpr float c[] = {1.f / 5040.f, 1.f / 720.f, 1.f / 120.f,
                                1.f / 24.f,   1.f / 6.f,   0.5f,
                                1.f};
  return horner(r, c) * r;
}

inline V scale2(V v, V n) {
#if defined(__AVX512F__)
  return (V)_mm512_scalef_ps((__m512)v, (__m512)n);  // inf / 0 past range
#else
  VI bits = (__builtin_convertvector(n, VI) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return v * scale;
#endif
}

inline V vexp(V x) {
  V n;
  V q = expm1_reduced(x, n);
  return scale2(q + 1.f, n);
}

// 1 / (1 + e^-x) by a division (here and in vtanh): AVX-512's 14-bit
// reciprocal estimate with a Newton step measured 4% slower in the forward,
// and is less exact.
inline V vsigmoid(V x) { return 1.f / (1.f + vexp(-x)); }

// tanh(x) = sign(x) (1 - e) / (1 + e), e = exp(-2|x|), with 1 - e taken
// as -expm1(-2|x|): accurate near 0, where 1 - e would cancel.
inline V vtanh(V x) {
  V ax = vmax(x, -x);
  V n;
  V q = expm1_reduced(-2.f * ax, n);
  V em1 = scale2(q, n) + (scale2(splat(1.f), n) - 1.f);  // e - 1
  V t = -em1 / (2.f + em1);
  return x < 0 ? -t : t;
}

inline V vabs(V x) { return (V)((VI)x & 0x7fffffff); }

// abs's derivative as JAX takes it: 1 at 0 (and -0).
inline V vabs_grad(V x) { return x >= 0 ? splat(1.f) : splat(-1.f); }

// jnp.sign: -1, 0 or 1, and NaN for NaN (x * 0 keeps a NaN and the zero's
// sign), so a non-finite gradient gives a non-finite update, as in JAX.
inline V vsign(V x) {
  const V one = splat(1.f), zero = splat(0.f);
  return x > 0 ? one : (x < 0 ? -one : x * zero);
}

// log(x) for x >= 0 (-inf at 0): x = 2^e m with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(u), u = (m - 1) / (m + 1), |u| < 0.172, by its series to
// u^11 (truncation < 1e-9).
inline V vlog(V x) {
  const auto tiny = x < 1.17549435e-38f;  // subnormal: scaled by 2^23 first
  const V xs = tiny ? x * 8388608.f : x;
  const VI bits = (VI)xs;
  VI e = ((bits >> 23) & 0xff) - 127;
  e = tiny ? e - 23 : e;
  V m = (V)((bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const auto high = m > 1.41421356f;
  m = high ? m * 0.5f : m;
  e = high ? e + 1 : e;
  const V u = (m - 1.f) / (m + 1.f);
  const V u2 = u * u;
  static constexpr float c[] = {1.f / 11.f, 1.f / 9.f, 1.f / 7.f,
                                1.f / 5.f,  1.f / 3.f, 1.f};
  const V p = horner(u2, c);
  const V ef = __builtin_convertvector(e, V);
  // ln2 split in two so that e * hi is exact.
  const V r = ef * 0.693359375f + (ef * -2.12194440e-4f + 2.f * u * p);
  return x == 0 ? splat(-INFINITY) : r;
}

inline V vsqrt(V x) {
#if defined(__AVX512F__)
  return (V)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  return (V)_mm256_sqrt_ps((__m256)x);
#elif defined(__SSE__)
  return (V)_mm_sqrt_ps((__m128)x);
#else
  V r;
  for (int l = 0; l < LANES; ++l) r[l] = std::sqrt(x[l]);
  return r;
#endif
}

inline V activate(int act, V x) {
  switch (act) {
    case TANH: return vtanh(x);
    case SILU: return x * vsigmoid(x);
    default: return vmax(x, splat(0.f));
  }
}

// d act(x) / dx times g, from the pre-activation x.
inline V activate_grad(int act, V x, V g) {
  switch (act) {
    case TANH: {
      V t = vtanh(x);
      return g * (1.f - t * t);
    }
    case SILU: {
      V s = vsigmoid(x);
      return g * (s * (1.f + x * (1.f - s)));
    }
    default: return x > 0 ? g : splat(0.f);
  }
}

// emit(j, init(j) + sum_k W[k * ld + j] * in[k]) for j < m: a layer whose
// sums start from `init` (a bias, or a part summed before) and go to `emit`
// (which may activate them) from registers, never stored unfinished.
// FMAs take 4 cycles and two issue per cycle, so 8 independent sums are in
// flight: 8 outputs at a time, and the last few outputs each split over 4
// partial sums of k.
template <class Init, class Emit>
LOPT_INLINE void dense(const float* w, int ld, int k_size, int m,
                       const V* in, Init init, Emit emit) {
  int j = 0;
  for (; j + 8 <= m; j += 8) {
    V a[8];
    for (int q = 0; q < 8; ++q) a[q] = init(j + q);
    for (int k = 0; k < k_size; ++k) {
      const float* row = w + k * ld + j;
      V v = in[k];
      for (int q = 0; q < 8; ++q) a[q] += row[q] * v;
    }
    for (int q = 0; q < 8; ++q) emit(j + q, a[q]);
  }
  for (; j < m; ++j) {
    V a[4] = {init(j), splat(0.f), splat(0.f), splat(0.f)};
    int k = 0;
    for (; k + 4 <= k_size; k += 4)
      for (int q = 0; q < 4; ++q) a[q] += w[(k + q) * ld + j] * in[k + q];
    for (; k < k_size; ++k) a[0] += w[k * ld + j] * in[k];
    emit(j, (a[0] + a[1]) + (a[2] + a[3]));
  }
}

// in_grad[k] (+)= sum_j W[k * ld + j] * g[j], k < k_size (8 rows at a
// time, for the same reason).
LOPT_INLINE void dense_transposed(const float* w, int ld, int k_size, int m,
                                  const V* g, V* in_grad, bool accumulate) {
  int k = 0;
  for (; k + 8 <= k_size; k += 8) {
    V a[8];
    for (int q = 0; q < 8; ++q) a[q] = accumulate ? in_grad[k + q] : splat(0.f);
    for (int j = 0; j < m; ++j) {
      V v = g[j];
      for (int q = 0; q < 8; ++q) a[q] += w[(k + q) * ld + j] * v;
    }
    for (int q = 0; q < 8; ++q) in_grad[k + q] = a[q];
  }
  for (; k < k_size; ++k) {
    const float* row = w + k * ld;
    V a[4] = {accumulate ? in_grad[k] : splat(0.f), splat(0.f), splat(0.f),
              splat(0.f)};
    int j = 0;
    for (; j + 4 <= m; j += 4)
      for (int q = 0; q < 4; ++q) a[q] += row[j + q] * g[j + q];
    for (; j < m; ++j) a[0] += row[j] * g[j];
    in_grad[k] = (a[0] + a[1]) + (a[2] + a[3]);
  }
}

// keep(v): v's R vectors stay in registers from here on, as an empty asm
// statement "changes" them: the compiler may no longer load them again from
// memory at each use. GCC otherwise reloads the operands of `outer_rows`'
// FMAs (two loads an FMA: twice its FMA time). One statement for all R:
// one statement each measured slower.
#if (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(__aarch64__))
#if defined(__x86_64__)
#define LOPT_REG(x) "+v"(x)
#else
#define LOPT_REG(x) "+w"(x)
#endif
template <int R>
LOPT_INLINE void keep(V (&v)[R]) {
  static_assert(R == 1 || R == 2 || R == 4, "keep: 1, 2 or 4 vectors");
  if constexpr (R == 4)
    asm("" : LOPT_REG(v[0]), LOPT_REG(v[1]), LOPT_REG(v[2]), LOPT_REG(v[3]));
  else if constexpr (R == 2)
    asm("" : LOPT_REG(v[0]), LOPT_REG(v[1]));
  else
    asm("" : LOPT_REG(v[0]));
}
#else
template <int R>
LOPT_INLINE void keep(V (&)[R]) {}
#endif

// outer_accumulate's rows k..k+R-1: a block of R x 4 sums stays in
// registers over the tiles, with each tile's R inputs and 4 cotangents
// loaded once (R + 4 loads for 4R FMAs); the last m % 4 columns one at a
// time.
template <int R>
LOPT_INLINE void outer_rows(V* acc, int ld, int k, int m, const V* in,
                            const V* g, int64_t stride, int tiles) {
  int j = 0;
  for (; j + 4 <= m; j += 4) {
    V a[R][4];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) a[r][c] = acc[(k + r) * ld + j + c];
    for (int t = 0; t < tiles; ++t) {
      const V* it = in + t * stride + k;
      const V* gt = g + t * stride + j;
      V i[R];
      for (int r = 0; r < R; ++r) i[r] = it[r];
      keep(i);
      for (int c = 0; c < 4; ++c) {
        V gc[1] = {gt[c]};
        keep(gc);
        for (int r = 0; r < R; ++r) a[r][c] += i[r] * gc[0];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) acc[(k + r) * ld + j + c] = a[r][c];
  }
  for (; j < m; ++j) {
    V a[R];
    for (int r = 0; r < R; ++r) a[r] = acc[(k + r) * ld + j];
    for (int t = 0; t < tiles; ++t) {
      V gc = g[t * stride + j];
      for (int r = 0; r < R; ++r) a[r] += in[t * stride + k + r] * gc;
    }
    for (int r = 0; r < R; ++r) acc[(k + r) * ld + j] = a[r];
  }
}

// acc[k * ld + j] += sum_t in_t[k] * g_t[j] (lane-wise) over `tiles`
// tiles, tile t's vectors at `in + t * stride` and `g + t * stride`: a
// layer's weight cotangent, 4 rows at a time, then 2, then 1.
LOPT_INLINE void outer_accumulate(V* acc, int ld, int k_size, int m,
                                  const V* in, const V* g, int64_t stride,
                                  int tiles) {
  int k = 0;
  for (; k + 4 <= k_size; k += 4)
    outer_rows<4>(acc, ld, k, m, in, g, stride, tiles);
  if (k + 2 <= k_size) {
    outer_rows<2>(acc, ld, k, m, in, g, stride, tiles);
    k += 2;
  }
  if (k < k_size) outer_rows<1>(acc, ld, k, m, in, g, stride, tiles);
}

// acc[j] += sum_t g_t[j]: a bias's cotangent.
inline void sum_accumulate(V* acc, int m, const V* g, int64_t stride,
                           int tiles) {
  for (int j = 0; j < m; ++j) {
    V a = acc[j];
    for (int t = 0; t < tiles; ++t) a += g[t * stride + j];
    acc[j] = a;
  }
}

// What the kernel computes around the paths (`features`, `direction`): the
// cell, its preprocessor and their constants.
struct Step {
  int cell = OPTIM4RL, prep = LOG_SIGN;
  bool second = false;     // Optim4RL's magnitude path sees s, not g^2
  float log_eps = 0.f;     // log_sign: log(|u| + log_eps)
  float p = 1.f, threshold = 0.f, scale = 1.f;  // andrychowicz: e^-p, e^p
  float update_eps = 0.f;  // Optim4RL: m / sqrt(v + update_eps)
};

struct Shape {
  int64_t paths, features, hidden, coords, size;
  int layers, act;
  Step step;
  int dims[MAXL];
  // offsets into a path's row of params
  int64_t w_i, w_h, b, w[MAXL], bias[MAXL];
  // offsets into one tile's stash (see `tile_backward`), and its size
  int64_t st_in[MAXL], st_g[MAXL], st_x, st_h, st_rh, st_da, st_dzr, stash;
  // offsets into one path's `Tile`, and its size
  int64_t tl_x, tl_h, tl_zr, tl_a, tl_hn, tl_gx, tl_rh,
      tl_pre[MAXL], tl_act[MAXL], tl_gin, tl_drh, tl_ct_out, tl_ct_hn, tl_dx,
      tl_dh, tile;
};

Shape make_shape(int64_t paths, int64_t hidden, int64_t coords,
                 ffi::Span<const int64_t> dims, int64_t act,
                 const Step& step) {
  Shape s;
  s.step = step;
  const int64_t features = step.prep == IDENTITY ? 1 : 2;
  s.paths = paths; s.features = features; s.hidden = hidden;
  s.coords = coords; s.act = static_cast<int>(act);
  s.layers = static_cast<int>(dims.size());  // `check` refuses > MAXL
  const int layers = std::min(s.layers, MAXL);
  int64_t o = 0;
  s.w_i = o; o += features * 3 * hidden;
  s.w_h = o; o += hidden * 3 * hidden;
  s.b = o; o += 3 * hidden;
  int64_t k = hidden;
  for (int l = 0; l < layers; ++l) {
    s.dims[l] = static_cast<int>(dims[l]);
    s.w[l] = o; o += k * dims[l];
    s.bias[l] = o; o += dims[l];
    k = dims[l];
  }
  s.size = o;
  // A tile's stash: each layer's input and output cotangent.
  int64_t q = 0;
  k = hidden;
  for (int l = 0; l < layers; ++l) {
    s.st_in[l] = q; q += k;
    s.st_g[l] = q; q += dims[l];
    k = dims[l];
  }
  s.st_x = q; q += features;
  s.st_h = q; q += hidden;
  s.st_rh = q; q += hidden;
  s.st_da = q; q += hidden;
  s.st_dzr = q; q += 2 * hidden;
  s.stash = q;
  // A tile, its arrays end to end.
  int64_t widest = hidden;
  q = 0;
  s.tl_x = q; q += features;
  s.tl_h = q; q += hidden;
  s.tl_zr = q; q += 2 * hidden;
  s.tl_a = q; q += hidden;
  s.tl_hn = q; q += hidden;
  s.tl_gx = q; q += 3 * hidden;
  s.tl_rh = q; q += hidden;
  for (int l = 0; l < layers; ++l) {
    s.tl_pre[l] = q; q += dims[l];
    s.tl_act[l] = q; q += dims[l];
    widest = std::max<int64_t>(widest, dims[l]);
  }
  s.tl_gin = q; q += widest;
  s.tl_drh = q; q += hidden;
  s.tl_ct_out = q; q += layers ? dims[layers - 1] : 0;
  s.tl_ct_hn = q; q += hidden;
  s.tl_dx = q; q += features;
  s.tl_dh = q; q += hidden;
  s.tile = q;
  return s;
}

// The sizes of a tile's maths: those of the call's `Shape` (`Dynamic`), or
// fixed at compile time for the common shapes, so that every loop has a
// known length and unrolls (`with_sizes` picks). In the one-thread harness
// (default cell, 70k coordinates) the fixed forward took 26 ns a
// coordinate against 30.
template <int H, int F, int L, int D0, int D1, int D2>
struct Sizes {
  static constexpr bool fixed = L > 0;
  static int hidden(const Shape& s) {
    return fixed ? H : static_cast<int>(s.hidden);
  }
  static int features(const Shape& s) {
    return fixed ? F : static_cast<int>(s.features);
  }
  static int layers(const Shape& s) { return fixed ? L : s.layers; }
  static int dim(const Shape& s, int l) {
    return fixed ? (l == 0 ? D0 : l == 1 ? D1 : D2) : s.dims[l];
  }
  static bool matches(const Shape& s) {
    if (!fixed) return true;
    if (s.hidden != H || s.features != F || s.layers != L) return false;
    for (int l = 0; l < L; ++l)
      if (s.dims[l] != dim(s, l)) return false;
    return true;
  }
};
using Dynamic = Sizes<0, 0, 0, 0, 0, 0>;
using PaperCell = Sizes<8, 2, 3, 16, 16, 1>;  // GRU 8, MLP 16, 16 (default)
using NoMlpCell = Sizes<8, 2, 1, 1, 0, 0>;    // GRU 8 straight to its output

// f(Z{}) with Z the first of the fixed `Sizes` that matches `s`, else
// `Dynamic`.
template <typename F>
void with_sizes(const Shape& s, F f) {
  if (PaperCell::matches(s)) return f(PaperCell{});
  if (NoMlpCell::matches(s)) return f(NoMlpCell{});
  f(Dynamic{});
}

// Loads LANES coordinates from `row + n` (fewer at the end, zeros after).
inline V load(const float* row, int64_t n, int64_t count) {
  V v = splat(0.f);
  if (count == LANES) {
    std::memcpy(&v, row + n, sizeof(V));  // one unaligned vector load
  } else {
    std::memcpy(&v, row + n, sizeof(float) * count);
  }
  return v;
}

inline void store(float* row, int64_t n, int64_t count, V v) {
  if (count == LANES) {
    std::memcpy(row + n, &v, sizeof(V));
  } else {
    std::memcpy(row + n, &v, sizeof(float) * count);
  }
}

// One path's forward of one tile, what its backward needs, and their
// scratch: vectors laid end to end in `Shape::tile` vectors at `base`
// (sized for the shape: arrays of the largest sizes, each 4 kB or more
// apart, would share L1's sets and evict one another).
struct Tile {
  V *x, *h, *zr, *a, *hn;
  V* pre[MAXL];  // each layer's output before its activation
  V* act[MAXL];  // each hidden layer's activation (the next's input)
  V *gx, *rh, *gin, *drh;  // scratch
  V *ct_out, *ct_hn, *dx, *dh;  // the backward's inputs and outputs
  Tile() = default;
  Tile(const Shape& s, V* base)
      : x(base + s.tl_x), h(base + s.tl_h), zr(base + s.tl_zr),
        a(base + s.tl_a), hn(base + s.tl_hn), gx(base + s.tl_gx),
        rh(base + s.tl_rh), gin(base + s.tl_gin), drh(base + s.tl_drh),
        ct_out(base + s.tl_ct_out), ct_hn(base + s.tl_ct_hn),
        dx(base + s.tl_dx), dh(base + s.tl_dh) {
    for (int l = 0; l < std::min(s.layers, MAXL); ++l) {
      pre[l] = base + s.tl_pre[l];
      act[l] = base + s.tl_act[l];
    }
  }
};

// Each layer's sums are activated in registers as they finish (`dense`'s
// `emit`). With `keep` the tile also holds what `tile_backward` reads (the
// gates, the candidate, every layer's pre-activation); without, only the
// new state and the outputs: the forward alone, with the same arithmetic.
template <class Z, bool keep = true>
LOPT_INLINE void tile_forward(const Shape& s, const float* p, Tile& t) {
  const int hd = Z::hidden(s), f = Z::features(s);
  const int ld = 3 * hd;
  const V* h = t.h;
  V *gx = t.gx, *zr = t.zr, *rh = t.rh;
  const float* b = p + s.b;
  // x w_i + b; then z, r = sigmoid(that + h w_h[:, :2H])
  dense(p + s.w_i, ld, f, ld, t.x, [&](int j) { return splat(b[j]); },
        [&](int j, V v) { gx[j] = v; });
  dense(p + s.w_h, ld, hd, 2 * hd, h, [&](int j) { return gx[j]; },
        [&](int j, V v) { zr[j] = vsigmoid(v); });
  for (int k = 0; k < hd; ++k) rh[k] = zr[hd + k] * h[k];
  // a = tanh(x w_i[:, 2H:] + b[2H:] + (r h) w_h[:, 2H:]); hn = (1-z) h + z a
  dense(p + s.w_h + 2 * hd, ld, hd, hd, rh,
        [&](int j) { return gx[2 * hd + j]; },
        [&](int j, V v) {
          const V a = vtanh(v), z = zr[j];
          if (keep) t.a[j] = a;
          t.hn[j] = (1.f - z) * h[j] + z * a;
        });
  const V* in = t.hn;
  int k = hd;
  const int layers = Z::layers(s);
  for (int l = 0; l < layers; ++l) {
    const int m = Z::dim(s, l);
    const float* bias = p + s.bias[l];
    V *pre = t.pre[l], *act = t.act[l];
    if (l < layers - 1) {
      dense(p + s.w[l], m, k, m, in, [&](int j) { return splat(bias[j]); },
            [&](int j, V v) {
              if (keep) pre[j] = v;
              act[j] = activate(s.act, v);
            });
      in = act;
    } else {
      dense(p + s.w[l], m, k, m, in, [&](int j) { return splat(bias[j]); },
            [&](int j, V v) { pre[j] = v; });
    }
    k = m;
  }
}

// The backward of one tile: `t` holds its forward (`tile_forward`) and in
// `t.ct_out`, `t.ct_hn` the cotangents of the outputs and the new state.
// Writes those of x and h to `t.dx` and `t.dh`, and each layer's input and
// output cotangent to `stash` (`Shape::st_*`), from which
// `stash_accumulate` adds the parameters' cotangent for a group of tiles.
template <class Z>
LOPT_INLINE void tile_backward(const Shape& s, const float* p, Tile& t,
                               V* stash) {
  const V *ct_out = t.ct_out, *ct_hn = t.ct_hn;
  V *dx = t.dx, *dh = t.dh;
  const int ihd = Z::hidden(s), f = Z::features(s), layers = Z::layers(s);
  const int ld = 3 * ihd;
  // MLP, last layer first.
  V* g = stash + s.st_g[layers - 1];
  for (int j = 0; j < Z::dim(s, layers - 1); ++j) g[j] = ct_out[j];
  V* gin = t.gin;
  for (int l = layers - 1; l >= 0; --l) {
    const int m = Z::dim(s, l);
    const int k_size = l ? Z::dim(s, l - 1) : ihd;
    const V* in = l ? t.act[l - 1] : t.hn;
    V* in_st = stash + s.st_in[l];
    for (int k = 0; k < k_size; ++k) in_st[k] = in[k];
    dense_transposed(p + s.w[l], m, k_size, m, g, gin, false);
    if (l) {
      g = stash + s.st_g[l - 1];
      for (int j = 0; j < k_size; ++j)
        g[j] = activate_grad(s.act, t.pre[l - 1][j], gin[j]);
    }
  }
  // GRU: hn = (1 - z) h + z a.
  V* da_pre = stash + s.st_da;
  V* dzr_pre = stash + s.st_dzr;
  V* rh = stash + s.st_rh;
  V* drh = t.drh;
  for (int j = 0; j < ihd; ++j) {
    V dhn = gin[j] + ct_hn[j];
    V z = t.zr[j], a = t.a[j];
    dh[j] = dhn * (1.f - z);
    da_pre[j] = dhn * z * (1.f - a * a);
    dzr_pre[j] = dhn * (a - t.h[j]) * z * (1.f - z);
    rh[j] = t.zr[ihd + j] * t.h[j];
    stash[s.st_h + j] = t.h[j];
  }
  for (int k = 0; k < f; ++k) stash[s.st_x + k] = t.x[k];
  // a = tanh(x w_i[:, 2H:] + (r h) w_h[:, 2H:] + b[2H:])
  dense_transposed(p + s.w_h + 2 * ihd, ld, ihd, ihd, da_pre, drh, false);
  for (int j = 0; j < ihd; ++j) {
    V r = t.zr[ihd + j];
    dh[j] += drh[j] * r;
    dzr_pre[ihd + j] = drh[j] * t.h[j] * r * (1.f - r);
  }
  // z, r = sigmoid(x w_i[:, :2H] + h w_h[:, :2H] + b[:2H])
  dense_transposed(p + s.w_h, ld, ihd, 2 * ihd, dzr_pre, dh, true);
  dense_transposed(p + s.w_i + 2 * ihd, ld, f, ihd, da_pre, dx, false);
  dense_transposed(p + s.w_i, ld, f, 2 * ihd, dzr_pre, dx, true);
}

// Adds to `acc` (lane-wise, laid out as the params) the parameters'
// cotangent of `tiles` tiles whose stashes are `s.stash` apart.
template <class Z>
inline void stash_accumulate(const Shape& s, const V* stash, int tiles,
                             V* acc) {
  const int ihd = Z::hidden(s), f = Z::features(s);
  const int ld = 3 * ihd;
  const int64_t st = s.stash;
  int k_size = ihd;
  for (int l = 0; l < Z::layers(s); ++l) {
    const int m = Z::dim(s, l);
    outer_accumulate(acc + s.w[l], m, k_size, m, stash + s.st_in[l],
                     stash + s.st_g[l], st, tiles);
    sum_accumulate(acc + s.bias[l], m, stash + s.st_g[l], st, tiles);
    k_size = m;
  }
  // the candidate a: columns 2H.. of w_i, w_h and b
  outer_accumulate(acc + s.w_i + 2 * ihd, ld, f, ihd, stash + s.st_x,
                   stash + s.st_da, st, tiles);
  outer_accumulate(acc + s.w_h + 2 * ihd, ld, ihd, ihd, stash + s.st_rh,
                   stash + s.st_da, st, tiles);
  sum_accumulate(acc + s.b + 2 * ihd, ihd, stash + s.st_da, st, tiles);
  // the gates z, r: columns ..2H
  outer_accumulate(acc + s.w_i, ld, f, 2 * ihd, stash + s.st_x,
                   stash + s.st_dzr, st, tiles);
  outer_accumulate(acc + s.w_h, ld, ihd, 2 * ihd, stash + s.st_h,
                   stash + s.st_dzr, st, tiles);
  sum_accumulate(acc + s.b, 2 * ihd, stash + s.st_dzr, st, tiles);
}

// Path p's input u_p: g, but Optim4RL's magnitude path sees g^2, or s
// (`cells._optim4rl`).
inline V path_input(const Step& st, int p, V g, V sm) {
  if (p == 0) return g;
  return st.second ? sm : g * g;
}

// The preprocessor's features of u (`lopt.preprocessing`), in x.
inline void features(const Step& st, V u, V* x) {
  switch (st.prep) {
    case IDENTITY:
      x[0] = u;
      return;
    case ANDRYCHOWICZ: {
      const V a = vabs(u);
      const auto big = a >= st.threshold;
      x[0] = big ? vlog(a) / st.p : splat(-1.f);
      x[1] = big ? vsign(u) : st.scale * u;
      return;
    }
    default:  // LOG_SIGN
      x[0] = vlog(vabs(u) + st.log_eps);
      x[1] = vsign(u);
  }
}

// The cotangent of u from its features' (dx), with JAX's derivatives of abs
// (`vabs_grad`) and sign (0).
inline V features_grad(const Step& st, V u, const V* dx) {
  switch (st.prep) {
    case IDENTITY:
      return dx[0];
    case ANDRYCHOWICZ: {
      const V a = vabs(u);
      return a >= st.threshold ? dx[0] * vabs_grad(u) / (a * st.p)
                               : dx[1] * st.scale;
    }
    default:  // LOG_SIGN
      return dx[0] * vabs_grad(u) / (vabs(u) + st.log_eps);
  }
}

// The cell's direction from its paths' MLP outputs `out[p][0..O)`
// (`cells.CELLS`).
inline V direction(const Step& st, V g, const V* const* out) {
  switch (st.cell) {
    case L2LGD2:
      return vexp(out[0][0]) * g;
    case LINEAR:
      return vexp(out[0][0]) * g + vexp(out[0][1]) * out[0][2];
    default: {  // OPTIM4RL: m / sqrt(v + eps)
      const V m = vsign(g) * vexp(out[0][0]);
      return m / vsqrt(vexp(out[1][0]) + st.update_eps);
    }
  }
}

// The cotangents of the paths' outputs (into ct_out) from the direction's
// (ct_d); returns the one of g through the direction itself.
inline V direction_grad(const Step& st, V g, const V* const* out, V ct_d,
                        V* const* ct_out) {
  switch (st.cell) {
    case L2LGD2: {
      const V e = vexp(out[0][0]);
      ct_out[0][0] = ct_d * e * g;
      return ct_d * e;
    }
    case LINEAR: {
      const V e0 = vexp(out[0][0]), e1 = vexp(out[0][1]);
      ct_out[0][0] = ct_d * e0 * g;
      ct_out[0][1] = ct_d * e1 * out[0][2];
      ct_out[0][2] = ct_d * e1;
      return ct_d * e0;
    }
    default: {  // OPTIM4RL: d = m / sqrt(w), m = sign(g) e^o0, w = e^o1 + eps
      const V v = vexp(out[1][0]);
      const V w = v + st.update_eps;
      const V d = vsign(g) * vexp(out[0][0]) / vsqrt(w);
      ct_out[0][0] = ct_d * d;
      ct_out[1][0] = -0.5f * ct_d * d / w * v;
      return splat(0.f);
    }
  }
}

// Runs `work(item)` for items 0..count-1 on XLA's thread pool and this
// thread; returns when all are done.
template <typename F>
void parallel_for(ffi::ThreadPool& pool, int64_t count, F work) {
  int64_t threads = std::min<int64_t>(pool.num_threads(), count - 1);
  if (threads <= 0) {
    for (int64_t i = 0; i < count; ++i) work(i);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto run = [shared, count, work]() {
    int64_t finished = 0;
    for (int64_t i; (i = shared->next.fetch_add(1)) < count;) {
      work(i);
      ++finished;
    }
    if (finished) {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->done += finished;
      if (shared->done == count) shared->cv.notify_all();
    }
  };
  for (int64_t t = 0; t < threads; ++t) pool.Schedule([run]() { run(); });
  run();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done == count; });
}

ffi::Error check(const Shape& s, int64_t params_size) {
  const Step& st = s.step;
  if (st.cell < OPTIM4RL || st.cell > LINEAR || st.prep < IDENTITY ||
      st.prep > ANDRYCHOWICZ || (st.second && st.cell != OPTIM4RL))
    return ffi::Error::InvalidArgument("lopt cell kernel: unknown cell");
  if (s.hidden > MAXD || s.hidden < 1 || s.features > MAXF ||
      s.layers > MAXL || s.layers < 1 || s.act < RELU || s.act > SILU)
    return ffi::Error::InvalidArgument("lopt cell kernel: sizes over limits");
  for (int l = 0; l < s.layers; ++l)
    if (s.dims[l] > MAXD || s.dims[l] < 1)
      return ffi::Error::InvalidArgument("lopt cell kernel: bad MLP width");
  if (s.paths != (st.cell == OPTIM4RL ? 2 : 1) ||
      s.dims[s.layers - 1] != (st.cell == LINEAR ? 3 : 1))
    return ffi::Error::InvalidArgument(
        "lopt cell kernel: paths or outputs do not match the cell");
  if (params_size != s.paths * s.size)
    return ffi::Error::InvalidArgument("lopt cell kernel: params size");
  return ffi::Error::Success();
}

// Chunk `item` of a call on `coords` coordinates: [begin, end).
struct Chunks {
  int64_t coords, chunks;
  void get(int64_t item, int64_t& begin, int64_t& end) const {
    begin = item * CHUNK;
    end = std::min(coords, begin + CHUNK);
  }
};

Chunks make_chunks(int64_t coords) {
  return Chunks{coords, std::max<int64_t>(1, (coords + CHUNK - 1) / CHUNK)};
}

// body(Z{}, item, begin, end) for each of `chunks` on XLA's thread pool,
// with Z the call's `Sizes` (`with_sizes`).
template <typename F>
void for_chunks(ffi::ThreadPool& pool, const Shape& s, const Chunks& chunks,
                F body) {
  with_sizes(s, [&](auto sizes) {
    parallel_for(pool, chunks.chunks, [&](int64_t item) {
      int64_t begin, end;
      chunks.get(item, begin, end);
      body(sizes, item, begin, end);
    });
  });
}

#if defined(__AVX512F__)
// A full tile's state rows, `LANES` rows of `h` floats (row-major, so `h`
// contiguous vectors), and the kernel's vectors (v[k] = column k of those
// rows) are one another's transpose. For h = 2, 4, 8 or 16 it is done in
// registers: log2(h) stages of two-vector permutes, stage s pairing the
// vectors that differ in bit s and sorting the pair's elements by bit s of
// the vector each ends in. Contiguous loads and stores with these permutes
// replace 16-lane gathers and scatters, which cost the kernel about 40% of
// its forward time once the state is out of cache (320k coordinates).
struct TransposePlan {
  // [direction: 0 rows -> columns, 1 back][stage][output vector][lane]:
  // lane m of the pair's low vector, or 16 + m for lane m of its high one.
  alignas(64) int32_t idx[2][4][16][16];
  bool ok = false;
};

inline TransposePlan make_plan(int h) {
  TransposePlan plan;
  int b = 0;
  while ((1 << b) < h) ++b;
  if ((1 << b) != h || h < 2 || h > 16) return plan;
  // Element e = r * h + k: row r < 16 of the tile, column k < h. Its place
  // in memory: vector e / 16, lane e % 16; in the kernel: vector k, lane r.
  auto place = [h](int e, int layout, int& vec, int& lane) {
    if (layout == 0) { vec = e / 16; lane = e % 16; }
    else { vec = e % h; lane = e / h; }
  };
  for (int dir = 0; dir < 2; ++dir) {
    const int src = dir, dst = 1 - dir;  // dir 0: memory (0) -> kernel (1)
    int slot[16][16];
    for (int e = 0; e < 16 * h; ++e) {
      int v, l;
      place(e, src, v, l);
      slot[v][l] = e;
    }
    for (int st = 0; st < b; ++st) {
      int next[16][16];
      for (int x = 0; x < h; ++x) {
        const int lo = x & ~(1 << st), hi = x | (1 << st), t = (x >> st) & 1;
        int found = 0, elem[32], sel[32];
        for (int side = 0; side < 2; ++side)
          for (int m = 0; m < 16; ++m) {
            const int e = slot[side ? hi : lo][m];
            int v, l;
            place(e, dst, v, l);
            if (((v >> st) & 1) == t) {
              elem[found] = e; sel[found] = side * 16 + m; ++found;
            }
          }
        if (found != 16) return plan;
        // Sorted by the place each element ends in (its lane, at the end).
        for (int i = 1; i < 16; ++i)
          for (int j = i; j > 0; --j) {
            int v1, l1, v2, l2;
            place(elem[j - 1], dst, v1, l1);
            place(elem[j], dst, v2, l2);
            if (v1 * 16 + l1 <= v2 * 16 + l2) break;
            std::swap(elem[j - 1], elem[j]);
            std::swap(sel[j - 1], sel[j]);
          }
        for (int l = 0; l < 16; ++l) {
          next[x][l] = elem[l];
          plan.idx[dir][st][x][l] = sel[l];
        }
      }
      std::memcpy(slot, next, sizeof(slot));
    }
    for (int x = 0; x < h; ++x)
      for (int l = 0; l < 16; ++l) {
        int v, ll;
        place(slot[x][l], dst, v, ll);
        if (v != x || ll != l) return plan;
      }
  }
  plan.ok = true;
  return plan;
}

inline const TransposePlan* plan_for(int64_t h) {
  static const TransposePlan plans[5] = {make_plan(2), make_plan(4),
                                         make_plan(8), make_plan(16),
                                         TransposePlan()};
  const int i = h == 2 ? 0 : h == 4 ? 1 : h == 8 ? 2 : h == 16 ? 3 : 4;
  return plans[i].ok ? &plans[i] : nullptr;
}

// v[0..H) through the plan's stages of direction `dir`, in place; H known
// at compile time, so the stages' loops unroll and their pairs are
// constants (9% of the forward against a loop over a run-time h).
template <int H>
inline void transpose_fixed(const TransposePlan& plan, int dir, V* v) {
  constexpr int stages = H == 2 ? 1 : H == 4 ? 2 : H == 8 ? 3 : 4;
  V a[H], b[H];
#pragma GCC unroll 16
  for (int x = 0; x < H; ++x) a[x] = v[x];
#pragma GCC unroll 4
  for (int st = 0; st < stages; ++st) {
#pragma GCC unroll 16
    for (int x = 0; x < H; ++x) {
      const int lo = x & ~(1 << st), hi = x | (1 << st);
      const __m512i idx = _mm512_load_si512(plan.idx[dir][st][x]);
      b[x] = (V)_mm512_permutex2var_ps((__m512)a[lo], idx, (__m512)a[hi]);
    }
#pragma GCC unroll 16
    for (int x = 0; x < H; ++x) a[x] = b[x];
  }
#pragma GCC unroll 16
  for (int x = 0; x < H; ++x) v[x] = a[x];
}

// The same for h = 2, 4, 8 or 16 (those `plan_for` has a plan for).
inline void transpose(const TransposePlan& plan, int dir, int64_t h, V* v) {
  switch (h) {
    case 2: return transpose_fixed<2>(plan, dir, v);
    case 4: return transpose_fixed<4>(plan, dir, v);
    case 8: return transpose_fixed<8>(plan, dir, v);
    default: return transpose_fixed<16>(plan, dir, v);
  }
}
#endif

// v[k] = state[(i + lane) * h + k] for the tile's lanes (zeros past count).
inline void load_state(const float* state, int64_t h, int64_t i,
                       int64_t count, V* v) {
#if defined(__AVX512F__)
  if (count == LANES) {
    const float* base = state + i * h;
    if (const TransposePlan* plan = plan_for(h)) {
      for (int64_t k = 0; k < h; ++k)
        v[k] = (V)_mm512_loadu_ps(base + k * LANES);
      transpose(*plan, 0, h, v);
      return;
    }
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                          15),
        _mm512_set1_epi32(static_cast<int>(h)));
    for (int64_t k = 0; k < h; ++k)
      v[k] = (V)_mm512_i32gather_ps(rows, base + k, 4);
    return;
  }
#endif
  float tmp[MAXD][LANES] = {};
  for (int64_t c = 0; c < count; ++c)
    for (int64_t k = 0; k < h; ++k) tmp[k][c] = state[(i + c) * h + k];
  for (int64_t k = 0; k < h; ++k) std::memcpy(&v[k], tmp[k], sizeof(V));
}

inline void store_state(float* state, int64_t h, int64_t i, int64_t count,
                        const V* v) {
#if defined(__AVX512F__)
  if (count == LANES) {
    float* base = state + i * h;
    if (const TransposePlan* plan = plan_for(h)) {
      V rows[16];
      for (int64_t k = 0; k < h; ++k) rows[k] = v[k];
      transpose(*plan, 1, h, rows);
      for (int64_t k = 0; k < h; ++k)
        _mm512_storeu_ps(base + k * LANES, (__m512)rows[k]);
      return;
    }
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                          15),
        _mm512_set1_epi32(static_cast<int>(h)));
    for (int64_t k = 0; k < h; ++k)
      _mm512_i32scatter_ps(base + k, rows, (__m512)v[k], 4);
    return;
  }
#endif
  float tmp[MAXD][LANES];
  for (int64_t k = 0; k < h; ++k) std::memcpy(tmp[k], &v[k], sizeof(V));
  for (int64_t c = 0; c < count; ++c)
    for (int64_t k = 0; k < h; ++k) state[(i + c) * h + k] = tmp[k][c];
}

// A call's attributes (lopt/fused_cell.py: `make_step`), decoded by the
// FFI (XLA_FFI_REGISTER_STRUCT_ATTR_DECODING below).
struct LoptCellAttrs {
  ffi::Span<const int64_t> dims;
  int64_t activation, hidden, cell, preprocessor, second_moment;
  float log_eps, p, threshold, scale, update_eps;
};

Step make_step(const LoptCellAttrs& a) {
  Step st;
  st.cell = static_cast<int>(a.cell);
  st.prep = static_cast<int>(a.preprocessor);
  st.second = a.second_moment != 0;
  st.log_eps = a.log_eps; st.p = a.p; st.threshold = a.threshold;
  st.scale = a.scale; st.update_eps = a.update_eps;
  return st;
}

// A call's buffers past params and g: `args` holds s (with second_moment),
// then `groups` groups of one state array [N, H] a path; `rets` holds the
// cotangent of s (`ret_s`, with second_moment), then one [N, H] a path.
struct Buffers {
  const float* s = nullptr;
  const float* states[2 * MAXP] = {};
  float* ct_s = nullptr;
  float* out[MAXP] = {};
};

ffi::Error get_arg(const ffi::RemainingArgs& args, size_t i, int64_t size,
                   const float*& out) {
  auto a = args.get<ffi::Buffer<ffi::F32>>(i);
  if (a.has_error()) return a.error();
  if (a.value().element_count() != static_cast<size_t>(size))
    return ffi::Error::InvalidArgument("lopt cell kernel: argument size");
  out = a.value().typed_data();
  return ffi::Error::Success();
}

ffi::Error get_ret(const ffi::RemainingRets& rets, size_t i, int64_t size,
                   float*& out) {
  auto r = rets.get<ffi::Buffer<ffi::F32>>(i);
  if (r.has_error()) return r.error();
  if ((*r.value()).element_count() != static_cast<size_t>(size))
    return ffi::Error::InvalidArgument("lopt cell kernel: result size");
  out = (*r.value()).typed_data();
  return ffi::Error::Success();
}

// The call's shape (params [P, S], g [N] and the attributes) and buffers,
// checked.
ffi::Error prepare(const ffi::Buffer<ffi::F32>& params,
                   const ffi::Buffer<ffi::F32>& g, const LoptCellAttrs& attrs,
                   const ffi::RemainingArgs& args, size_t groups,
                   const ffi::RemainingRets& rets, bool ret_s, Shape& s,
                   Buffers& b) {
  auto pd = params.dimensions();
  if (pd.size() != 2)
    return ffi::Error::InvalidArgument(
        "lopt cell kernel: params must be [P, S]");
  // g's every axis is coordinates ([N], or [B, N] for a batch that shares
  // the params), the states' all but the last.
  const int64_t n = static_cast<int64_t>(g.element_count());
  s = make_shape(pd[0], attrs.hidden, n, attrs.dims, attrs.activation,
                 make_step(attrs));
  if (ffi::Error e = check(s, params.element_count()); e.failure()) return e;
  const size_t paths = static_cast<size_t>(s.paths);
  const size_t second = s.step.second ? 1 : 0;
  if (args.size() != second + groups * paths ||
      rets.size() != (ret_s ? second : 0) + paths)
    return ffi::Error::InvalidArgument("lopt cell kernel: one state a path");
  const int64_t state_size = n * s.hidden;
  if (second)
    if (ffi::Error e = get_arg(args, 0, n, b.s); e.failure()) return e;
  for (size_t i = 0; i < groups * paths; ++i)
    if (ffi::Error e = get_arg(args, second + i, state_size, b.states[i]);
        e.failure())
      return e;
  const size_t ct_s = ret_s ? second : 0;
  if (ct_s)
    if (ffi::Error e = get_ret(rets, 0, n, b.ct_s); e.failure()) return e;
  for (size_t p = 0; p < paths; ++p)
    if (ffi::Error e = get_ret(rets, ct_s + p, state_size, b.out[p]);
        e.failure())
      return e;
  return ffi::Error::Success();
}

// Each path's tile in this thread's arena (kept across chunks and calls),
// end to end; `out[p]` its MLP outputs, `ct_out[p]` (if not null) their
// cotangents.
inline void bind_tiles(const Shape& s, Tile* t, const V** out,
                       V** ct_out) {
  thread_local std::vector<V> arena;
  if (arena.size() < static_cast<size_t>(s.paths * s.tile))
    arena.resize(s.paths * s.tile);
  for (int64_t q = 0; q < s.paths; ++q) {
    t[q] = Tile(s, arena.data() + q * s.tile);
    out[q] = t[q].pre[s.layers - 1];
    if (ct_out) ct_out[q] = t[q].ct_out;
  }
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> params,
                   ffi::Buffer<ffi::F32> g, ffi::RemainingArgs args,
                   ffi::Result<ffi::Buffer<ffi::F32>> d,
                   ffi::RemainingRets new_states, LoptCellAttrs attrs) {
  Shape s;
  Buffers b;
  if (ffi::Error e = prepare(params, g, attrs, args, 1, new_states, false, s,
                             b);
      e.failure())
    return e;
  const int64_t n = s.coords, paths = s.paths;
  const Chunks chunks = make_chunks(n);
  const float* pp = params.typed_data();
  const float* gp = g.typed_data();
  float* dp = d->typed_data();
  for_chunks(pool, s, chunks, [&](auto sizes, int64_t, int64_t begin,
                                  int64_t end) {
    using Z = decltype(sizes);
    const int64_t hd = Z::hidden(s);
    Tile t[MAXP];
    const V* out[MAXP];
    bind_tiles(s, t, out, nullptr);
    for (int64_t i = begin; i < end; i += LANES) {
      const int64_t count = std::min<int64_t>(LANES, end - i);
      const V gv = load(gp, i, count);
      const V sv = b.s ? load(b.s, i, count) : splat(0.f);
      for (int q = 0; q < paths; ++q) {
        features(s.step, path_input(s.step, q, gv, sv), t[q].x);
        load_state(b.states[q], hd, i, count, t[q].h);
        tile_forward<Z, false>(s, pp + q * s.size, t[q]);
        store_state(b.out[q], hd, i, count, t[q].hn);
      }
      store(dp, i, count, direction(s.step, gv, out));
    }
  });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> params,
                    ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> ct_d,
                    ffi::RemainingArgs args,
                    ffi::Result<ffi::Buffer<ffi::F32>> ct_params,
                    ffi::Result<ffi::Buffer<ffi::F32>> ct_g,
                    ffi::RemainingRets rets, LoptCellAttrs attrs) {
  // args: [s,] h_0..h_{P-1}, then ct_hn_0..ct_hn_{P-1}.
  Shape s;
  Buffers b;
  if (ffi::Error e = prepare(params, g, attrs, args, 2, rets, true, s, b);
      e.failure())
    return e;
  if (ct_d.element_count() != static_cast<size_t>(s.coords))
    return ffi::Error::InvalidArgument("lopt cell kernel: ct_d size");
  const int64_t n = s.coords, paths = s.paths;
  const int64_t row = paths * s.size;  // all paths' parameters
  const Chunks chunks = make_chunks(n);
  const float* pp = params.typed_data();
  const float* gp = g.typed_data();
  const float* cdp = ct_d.typed_data();
  float* cgp = ct_g->typed_data();
  // Each chunk's parameter cotangent, added in chunk order at the end.
  std::vector<float> partial(chunks.chunks * row, 0.f);
  for_chunks(pool, s, chunks, [&](auto sizes, int64_t item, int64_t begin,
                                  int64_t end) {
    using Z = decltype(sizes);
    const int64_t hd = Z::hidden(s);
    // Scratch kept per thread across chunks and calls (no allocation):
    // lane-wise sums of each path's parameter cotangent, and each path's
    // stashes of GROUP tiles.
    thread_local std::vector<V> acc, stash;
    acc.assign(row, splat(0.f));
    if (stash.size() < static_cast<size_t>(paths * GROUP * s.stash))
      stash.resize(paths * GROUP * s.stash);
    Tile t[MAXP];
    const V* out[MAXP];
    V* ct_out[MAXP];
    bind_tiles(s, t, out, ct_out);
    int tiles = 0;
    for (int64_t i = begin; i < end; i += LANES) {
      const int64_t count = std::min<int64_t>(LANES, end - i);
      const V gv = load(gp, i, count);
      const V sv = b.s ? load(b.s, i, count) : splat(0.f);
      V u[MAXP];
      for (int q = 0; q < paths; ++q) {
        u[q] = path_input(s.step, q, gv, sv);
        features(s.step, u[q], t[q].x);
        load_state(b.states[q], hd, i, count, t[q].h);
        tile_forward<Z>(s, pp + q * s.size, t[q]);
      }
      V cg = direction_grad(s.step, gv, out, load(cdp, i, count), ct_out);
      V cs = splat(0.f);
      for (int q = 0; q < paths; ++q) {
        load_state(b.states[paths + q], hd, i, count, t[q].ct_hn);
        tile_backward<Z>(s, pp + q * s.size, t[q],
                         stash.data() + (q * GROUP + tiles) * s.stash);
        store_state(b.out[q], hd, i, count, t[q].dh);
        const V cu = features_grad(s.step, u[q], t[q].dx);
        if (q == 0) cg += cu;
        else if (s.step.second) cs = cu;
        else cg += 2.f * gv * cu;  // u = g^2
      }
      store(cgp, i, count, cg);
      if (b.ct_s) store(b.ct_s, i, count, cs);
      if (++tiles == GROUP || i + LANES >= end) {
        for (int q = 0; q < paths; ++q)
          stash_accumulate<Z>(s, stash.data() + q * GROUP * s.stash, tiles,
                           acc.data() + q * s.size);
        tiles = 0;
      }
    }
    float* sums = partial.data() + item * row;
    for (int64_t q = 0; q < row; ++q) {
      float total = 0.f;
      for (int lane = 0; lane < LANES; ++lane) total += acc[q][lane];
      sums[q] = total;
    }
  });
  float* cpp = ct_params->typed_data();
  std::fill(cpp, cpp + row, 0.f);
  for (int64_t c = 0; c < chunks.chunks; ++c) {
    const float* src = partial.data() + c * row;
    for (int64_t q = 0; q < row; ++q) cpp[q] += src[q];
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_REGISTER_STRUCT_ATTR_DECODING(
    LoptCellAttrs, xla::ffi::StructMember<xla::ffi::Span<const int64_t>>("dims"),
    xla::ffi::StructMember<int64_t>("activation"),
    xla::ffi::StructMember<int64_t>("hidden"),
    xla::ffi::StructMember<int64_t>("cell"),
    xla::ffi::StructMember<int64_t>("preprocessor"),
    xla::ffi::StructMember<int64_t>("second_moment"),
    xla::ffi::StructMember<float>("log_eps"),
    xla::ffi::StructMember<float>("p"),
    xla::ffi::StructMember<float>("threshold"),
    xla::ffi::StructMember<float>("scale"),
    xla::ffi::StructMember<float>("update_eps"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    LoptCellForward, Forward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()        // params [P, S]
        .Arg<ffi::Buffer<ffi::F32>>()        // g [N]
        .RemainingArgs()                     // [s [N],] h_p [N, H]
        .Ret<ffi::Buffer<ffi::F32>>()        // d [N]
        .RemainingRets()                     // hn_p [N, H]
        .Attrs<LoptCellAttrs>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    LoptCellBackward, Backward,
    ffi::Ffi::Bind()
        .Ctx<ffi::ThreadPool>()
        .Arg<ffi::Buffer<ffi::F32>>()        // params [P, S]
        .Arg<ffi::Buffer<ffi::F32>>()        // g [N]
        .Arg<ffi::Buffer<ffi::F32>>()        // ct_d [N]
        .RemainingArgs()                     // [s,] h_p, then ct_hn_p
        .Ret<ffi::Buffer<ffi::F32>>()        // ct_params [P, S]
        .Ret<ffi::Buffer<ffi::F32>>()        // ct_g [N]
        .RemainingRets()                     // [ct_s [N],] ct_h_p [N, H]
        .Attrs<LoptCellAttrs>());
