// MobileNetV2's inverted residual (1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 projection,
// + x when res) fused over output rows: each thread keeps the three expanded rows its depthwise
// row needs in a ring, so the expanded tensor (6x the channels) never goes to memory. NCHW
// float32, BatchNorm folded into the weights, AVX-512. A measurement of that lever
// (benchmarks/fused_inverted_residual.py), not a kernel the product runs. The stem (stem_run)
// too, for the model split around the kernel.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

typedef struct {
  int cin, ce, co, s, H, W, res, threads;  // ce, co: multiples of 8; H, W even when s is 2
  float *w1p, *b1, *wd, *bd, *w2p, *b2;   // packed weights [ce/8][cin][8], [co/8][ce][8]
  float *buf[64];                          // per-thread work space, zeroed once
} blk_t;

static float *pack8(const float *w, int rows, int k) {
  float *p = aligned_alloc(64, sizeof(float) * rows * k);
  for (int r0 = 0; r0 < rows; r0 += 8)
    for (int c = 0; c < k; c++)
      for (int j = 0; j < 8; j++) p[(size_t)r0 * k + c * 8 + j] = w[(size_t)(r0 + j) * k + c];
  return p;
}

static inline __m512 relu6(__m512 v) {
  return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.f));
}

// 8 channels x nv vectors of 16 pixels from pixel p (nv <= 3: up to 24 accumulators, 11 loads
// per 24 FMAs); inlined with a constant nv, so the loops over v unroll.
static inline __attribute__((always_inline)) void tile8(
    int nv, int K, const float *wp, const float *bias, const float *in, long ist, float *out,
    long ost, int p, int act, const float *add, long ast) {
  __m512 a[8][3];
  for (int j = 0; j < 8; j++)
    for (int v = 0; v < nv; v++) a[j][v] = _mm512_set1_ps(bias[j]);
  for (int k = 0; k < K; k++) {
    __m512 x[3];
    for (int v = 0; v < nv; v++) x[v] = _mm512_loadu_ps(in + k * ist + p + 16 * v);
    for (int j = 0; j < 8; j++) {
      __m512 w = _mm512_set1_ps(wp[k * 8 + j]);
      for (int v = 0; v < nv; v++) a[j][v] = _mm512_fmadd_ps(w, x[v], a[j][v]);
    }
  }
  for (int j = 0; j < 8; j++)
    for (int v = 0; v < nv; v++) {
      __m512 r = a[j][v];
      if (act) r = relu6(r);
      if (add) r = _mm512_add_ps(r, _mm512_loadu_ps(add + j * ast + p + 16 * v));
      _mm512_storeu_ps(out + j * ost + p + 16 * v, r);
    }
}

// out[c][p] = act(bias[c] + sum_k wp[k][c] * in[k][p]) (+ add[c][p]) for 8 channels, n pixels.
static inline void gemm8(int K, const float *wp, const float *bias, const float *in, long ist,
                         float *out, long ost, int n, int act, const float *add, long ast) {
  int p = 0;
  for (; p + 48 <= n; p += 48) tile8(3, K, wp, bias, in, ist, out, ost, p, act, add, ast);
  for (; p + 32 <= n; p += 32) tile8(2, K, wp, bias, in, ist, out, ost, p, act, add, ast);
  for (; p < n; p += 16) {
    __mmask16 m = (n - p) >= 16 ? 0xffff : (__mmask16)((1u << (n - p)) - 1);
    __m512 a[8];
    for (int j = 0; j < 8; j++) a[j] = _mm512_set1_ps(bias[j]);
    for (int k = 0; k < K; k++) {
      __m512 x0 = _mm512_maskz_loadu_ps(m, in + k * ist + p);
      for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(wp[k * 8 + j]), x0, a[j]);
    }
    for (int j = 0; j < 8; j++) {
      __m512 r = a[j];
      if (act) r = relu6(r);
      if (add) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, add + j * ast + p));
      _mm512_mask_storeu_ps(out + j * ost + p, m, r);
    }
  }
}

#define PAD 16
// Row buffer layout per channel: s=1: [PAD | W | PAD]; s=2: [PAD | even W/2 | PAD | PAD | odd W/2 | PAD]
static inline int seg(const blk_t *b) { return b->s == 1 ? b->W + 2 * PAD : b->W / 2 + 2 * PAD; }
static inline int rowlen(const blk_t *b) { return b->s == 1 ? seg(b) : 2 * seg(b); }

blk_t *blk_new(int cin, int ce, int co, int s, int H, int W, int res, const float *w1, const float *b1,
               const float *wd, const float *bd, const float *w2, const float *b2) {
  blk_t *b = calloc(1, sizeof(blk_t));
  b->cin = cin; b->ce = ce; b->co = co; b->s = s; b->H = H; b->W = W; b->res = res;
  b->w1p = pack8(w1, ce, cin); b->w2p = pack8(w2, co, ce);
  b->b1 = malloc(4 * ce); memcpy(b->b1, b1, 4 * ce);
  b->bd = malloc(4 * ce); memcpy(b->bd, bd, 4 * ce);
  b->wd = malloc(36 * ce); memcpy(b->wd, wd, 36 * ce);
  b->b2 = malloc(4 * co); memcpy(b->b2, b2, 4 * co);
  size_t rowsz = (size_t)ce * rowlen(b), n = 4 * rowsz + (size_t)ce * (W / s) + 16 + (size_t)cin * W + (size_t)cin * 48 + 48;
  b->threads = omp_get_max_threads() < 64 ? omp_get_max_threads() : 64;
  for (int t = 0; t < b->threads; t++) { b->buf[t] = aligned_alloc(64, 4 * n + 64); memset(b->buf[t], 0, 4 * n); }
  return b;
}

static void expand_row(const blk_t *b, const float *x, int r, float *E, float *tmp) {
  const int W = b->W, cin = b->cin, ce = b->ce, rl = rowlen(b);
  const float *src = x + (size_t)r * W;
  long ist = (long)b->H * W;
  if (b->s == 2) {  // split input columns into even | odd (1x1 conv is per pixel)
    const __m512i ie = _mm512_setr_epi32(0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30);
    const __m512i io = _mm512_setr_epi32(1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31);
    for (int c = 0; c < cin; c++) {
      const float *s0 = src + c * ist; float *t = tmp + (size_t)c * W;
      int p = 0;
      for (; p + 32 <= W; p += 32) {
        __m512 a = _mm512_loadu_ps(s0 + p), bb = _mm512_loadu_ps(s0 + p + 16);
        _mm512_storeu_ps(t + p / 2, _mm512_permutex2var_ps(a, ie, bb));
        _mm512_storeu_ps(t + W / 2 + p / 2, _mm512_permutex2var_ps(a, io, bb));
      }
      for (; p < W; p += 2) { t[p / 2] = s0[p]; t[W / 2 + p / 2] = s0[p + 1]; }
    }
    for (int h = 0; h < 2; h++)
      for (int p = 0; p < W / 2; p += 48) {
        int n = W / 2 - p < 48 ? W / 2 - p : 48;
        float *pk = tmp + (size_t)cin * W;   // [cin][48]: no 4K aliasing between the K rows
        for (int c = 0; c < cin; c++) memcpy(pk + c * 48, tmp + (size_t)c * W + h * (W / 2) + p, 4 * n);
        for (int c0 = 0; c0 < ce; c0 += 8)
          gemm8(cin, b->w1p + (size_t)c0 * cin, b->b1 + c0, pk, 48,
                E + (size_t)c0 * rl + h * seg(b) + PAD + p, rl, n, 1, 0, 0);
      }
  } else {
    for (int p = 0; p < W; p += 48) {
      int n = W - p < 48 ? W - p : 48;
      for (int c = 0; c < cin; c++) memcpy(tmp + c * 48, src + c * ist + p, 4 * n);
      for (int c0 = 0; c0 < ce; c0 += 8)
        gemm8(cin, b->w1p + (size_t)c0 * cin, b->b1 + c0, tmp, 48, E + (size_t)c0 * rl + PAD + p, rl, n, 1, 0, 0);
    }
  }
}

// dw 3x3 + ReLU6 for one output row from three expanded rows (NULL = zero row).
static void dw_row(const blk_t *b, const float *r0, const float *r1, const float *r2, const float *zero, float *D) {
  const int ce = b->ce, Wo = b->W / b->s, rl = rowlen(b), sg = seg(b);
  const float *rows[3] = {r0 ? r0 : zero, r1 ? r1 : zero, r2 ? r2 : zero};
  for (int c = 0; c < ce; c++) {
    const float *k = b->wd + c * 9;
    __m512 kk[9];
    for (int i = 0; i < 9; i++) kk[i] = _mm512_set1_ps(k[i]);
    __m512 bias = _mm512_set1_ps(b->bd[c]);
    float *d = D + (size_t)c * Wo;
    int p = 0;
#define TAPS(ACC, OFF) \
      for (int ky = 0; ky < 3; ky++) { \
        const float *row = rows[ky] + (size_t)c * rl; \
        const float *l = b->s == 1 ? row + PAD + p + OFF - 1 : row + sg + PAD + p + OFF - 1; \
        const float *mm = b->s == 1 ? row + PAD + p + OFF : row + PAD + p + OFF; \
        const float *r_ = b->s == 1 ? row + PAD + p + OFF + 1 : row + sg + PAD + p + OFF; \
        ACC = _mm512_fmadd_ps(kk[ky * 3 + 0], _mm512_loadu_ps(l), ACC); \
        ACC = _mm512_fmadd_ps(kk[ky * 3 + 1], _mm512_loadu_ps(mm), ACC); \
        ACC = _mm512_fmadd_ps(kk[ky * 3 + 2], _mm512_loadu_ps(r_), ACC); }
    for (; p + 64 <= Wo; p += 64) {
      __m512 a0 = bias, a1 = bias, a2 = bias, a3 = bias;
      TAPS(a0, 0) TAPS(a1, 16) TAPS(a2, 32) TAPS(a3, 48)
      _mm512_storeu_ps(d + p, relu6(a0)); _mm512_storeu_ps(d + p + 16, relu6(a1));
      _mm512_storeu_ps(d + p + 32, relu6(a2)); _mm512_storeu_ps(d + p + 48, relu6(a3));
    }
    for (; p < Wo; p += 16) {
      __mmask16 m = (Wo - p) >= 16 ? 0xffff : (__mmask16)((1u << (Wo - p)) - 1);
      __m512 acc = bias;
      TAPS(acc, 0)
      _mm512_mask_storeu_ps(d + p, m, relu6(acc));
    }
  }
}

void blk_run(const blk_t *b, const float *x, float *y) {
  const int Ho = b->H / b->s, Wo = b->W / b->s, rl = rowlen(b);
  const size_t rowsz = (size_t)b->ce * rl;
#pragma omp parallel num_threads(b->threads)
  {
    int T = omp_get_num_threads(), t = omp_get_thread_num();
    int ra = (int)((long)Ho * t / T), rb = (int)((long)Ho * (t + 1) / T);
    float *ring = b->buf[t], *zero = ring + 3 * rowsz, *D = zero + rowsz, *tmp = D + (size_t)b->ce * Wo + 16;
    int have[3] = {-9, -9, -9};
    for (int r = ra; r < rb; r++) {
      const float *rows[3];
      for (int ky = 0; ky < 3; ky++) {
        int ir = r * b->s - 1 + ky;
        if (ir < 0 || ir >= b->H) { rows[ky] = NULL; continue; }
        int slot = ir % 3;
        float *E = ring + slot * rowsz;
        if (have[slot] != ir) { expand_row(b, x, ir, E, tmp); have[slot] = ir; }
        rows[ky] = E;
      }
      dw_row(b, rows[0], rows[1], rows[2], zero, D);
      long ost = (long)Ho * Wo;
      for (int p = 0; p < Wo; p += 48) {
        int n = Wo - p < 48 ? Wo - p : 48;
        for (int c0 = 0; c0 < b->co; c0 += 8)
          gemm8(b->ce, b->w2p + (size_t)c0 * b->ce, b->b2 + c0, D + p, Wo, y + (size_t)c0 * ost + (size_t)r * Wo + p, ost, n, 0,
                b->res ? x + (size_t)c0 * ost + (size_t)r * Wo + p : 0, ost);
      }
    }
  }
}

// The stem: 3x3 convolution, stride 2, padding 1, 3 -> co channels (a multiple of 8), ReLU6;
// H and W even. Each output row from its three input rows split into even | odd columns.
typedef struct { int ci, co, H, W, threads; float *wp, *b, *buf[64]; } stem_t;

stem_t *stem_new(int ci, int co, int H, int W, const float *w, const float *b) {
  stem_t *s = calloc(1, sizeof(stem_t));
  s->ci = ci; s->co = co; s->H = H; s->W = W;
  s->wp = pack8(w, co, ci * 9);  // [co/8][ci*9][8]
  s->b = malloc(4 * co); memcpy(s->b, b, 4 * co);
  s->threads = omp_get_max_threads() < 64 ? omp_get_max_threads() : 64;
  size_t n = (size_t)ci * 3 * 2 * (W / 2 + 2 * PAD);
  for (int t = 0; t < s->threads; t++) { s->buf[t] = aligned_alloc(64, 4 * n + 64); memset(s->buf[t], 0, 4 * n); }
  return s;
}

void stem_run(const stem_t *s, const float *x, float *y) {
  const int Ho = s->H / 2, Wo = s->W / 2, sg = Wo + 2 * PAD;
#pragma omp parallel num_threads(s->threads)
  {
    int T = omp_get_num_threads(), t = omp_get_thread_num();
    float *rows = s->buf[t];  // [ci][ky][even | odd], each segment [PAD | Wo | PAD]
    for (int r = (int)((long)Ho * t / T); r < (int)((long)Ho * (t + 1) / T); r++) {
      for (int c = 0; c < s->ci; c++)
        for (int ky = 0; ky < 3; ky++) {
          float *ev = rows + ((size_t)(c * 3 + ky) * 2) * sg + PAD, *od = ev + sg;
          int ir = 2 * r - 1 + ky;
          if (ir < 0 || ir >= s->H) { memset(ev, 0, 4 * Wo); memset(od, 0, 4 * Wo); continue; }
          const float *src = x + ((size_t)c * s->H + ir) * s->W;
          for (int p = 0; p < Wo; p++) { ev[p] = src[2 * p]; od[p] = src[2 * p + 1]; }
        }
      for (int p = 0; p < Wo; p += 16) {
        __mmask16 m = (Wo - p) >= 16 ? 0xffff : (__mmask16)((1u << (Wo - p)) - 1);
        __m512 in[27];  // the 27 taps of 16 output pixels
        for (int c = 0; c < s->ci; c++)
          for (int ky = 0; ky < 3; ky++) {
            const float *ev = rows + ((size_t)(c * 3 + ky) * 2) * sg + PAD + p, *od = ev + sg;
            in[(c * 3 + ky) * 3 + 0] = _mm512_loadu_ps(od - 1);
            in[(c * 3 + ky) * 3 + 1] = _mm512_loadu_ps(ev);
            in[(c * 3 + ky) * 3 + 2] = _mm512_loadu_ps(od);
          }
        for (int c0 = 0; c0 < s->co; c0 += 8) {
          const float *wp = s->wp + (size_t)c0 * s->ci * 9;
          __m512 a[8];
          for (int j = 0; j < 8; j++) a[j] = _mm512_set1_ps(s->b[c0 + j]);
          for (int k = 0; k < s->ci * 9; k++)
            for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(_mm512_set1_ps(wp[k * 8 + j]), in[k], a[j]);
          for (int j = 0; j < 8; j++)
            _mm512_mask_storeu_ps(y + ((size_t)(c0 + j) * Ho + r) * Wo + p, m, relu6(a[j]));
        }
      }
    }
  }
}

// About n vector FMAs (16 lanes) over the threads, 24 independent chains per thread kept in
// registers, no loads: the cores' arithmetic limit. Returns the number of vector FMAs done.
volatile float fma_sink;

long fma_loop(long n) {
  long done = 0;
#pragma omp parallel
  {
    __m512 a[24];
    for (int i = 0; i < 24; i++) a[i] = _mm512_set1_ps(1e-3f * i);
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    const long rounds = n / omp_get_num_threads() / 24;
    for (long k = rounds; k > 0; k--)
#pragma GCC unroll 24  // so the 24 chains stay in registers
      for (int i = 0; i < 24; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
    __m512 s = a[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, a[i]);
#pragma omp critical
    {
      fma_sink += _mm512_reduce_add_ps(s);
      done += 24 * rounds;
    }
  }
  return done;
}
