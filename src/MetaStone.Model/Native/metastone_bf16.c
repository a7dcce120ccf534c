// bf16 × bf16 → fp32 matrix products with AVX512-BF16 (vdpbf16ps), for MetaStone's batched decode steps (issue 13).
// .NET 10 has no AVX512-BF16 intrinsic, hence C. Built by build.sh into linux-x64/libmetastone_bf16.so, which is checked
// in (the build and CI need no C compiler); MetaStone.Model.Kernels.NativeBf16 loads it and calls it only on CPUs that
// report avx512_bf16. No threads here: the caller splits the weight rows among its own threads.
#include <immintrin.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))
#ifndef PREFETCH_BLOCKS
#define PREFETCH_BLOCKS 2
#endif
#ifndef BLOCK_CHUNKS
#define BLOCK_CHUNKS 32
#endif

// out[i] = bf16(x[i]), round to nearest even (vcvtne2ps2bf16), for count elements.
EXPORT void metastone_fp32_to_bf16(const float* x, uint16_t* out, long count)
{
    long i = 0;
    for (; i + 32 <= count; i += 32)
    {
        __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512(out + i, (__m512i)packed);
    }
    for (; i < count; i++)
    {
        __m128bh one = _mm_cvtneps_pbh(_mm_set_ss(x[i]));
        out[i] = (uint16_t)_mm_extract_epi16((__m128i)one, 0);
    }
}

// One chunk of 32 bf16 along K, the last one masked when K is not a multiple of 32 (masked lanes load as 0).
static inline __m512bh load_chunk(const uint16_t* p, __mmask32 mask) { return (__m512bh)_mm512_maskz_loadu_epi16(mask, p); }

// [Σa, Σb, Σc, Σd]: four horizontal sums at once (13 instructions, against 4 × 8 for four _mm512_reduce_add_ps; at the
// end of every tile they cost a fifth of the dot products when K is 896).
static inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));   // per 128-bit lane: a02 b02 a13 b13
    __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));   // per lane: a b c d
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// A tile of four weight rows (w0..w3, at columns j..j+3 of y) against R activation rows starting at row m: R·4
// accumulators over K, chunk by chunk. Each chunk loads the four weight rows once and each activation row once, so a
// tile of R rows costs 4 + R loads for 4·R dot products. R = 6 (24 accumulators + 5 loaded registers of the 32) keeps
// the dot products, not the loads, the bound (AMD Zen 4 issues one 512-bit load a cycle and two dot products); the
// first version's 4 × 4 tiles issued 8 loads for 16 and ran at ~415 of the ~780 GFLOP/s the instruction gives.
// (Written out with named accumulators: an array of them, even fully unrolled, made gcc store all 24 to the stack on
// every chunk.)
#define ACC(r) __m512 a##r##0 = _mm512_setzero_ps(), a##r##1 = a##r##0, a##r##2 = a##r##0, a##r##3 = a##r##0;
#define DOT(r)                                                                                                       \
    {                                                                                                                \
        __m512bh v = load_chunk(x + (r) * k + o, mask);                                                              \
        a##r##0 = _mm512_dpbf16_ps(a##r##0, v, q0); a##r##1 = _mm512_dpbf16_ps(a##r##1, v, q1);                     \
        a##r##2 = _mm512_dpbf16_ps(a##r##2, v, q2); a##r##3 = _mm512_dpbf16_ps(a##r##3, v, q3);                      \
    }
// The first block of K writes bias + sum, later blocks add their sums to it.
#define PUT(r)                                                                                                       \
    {                                                                                                                \
        __m128 sums = sum4(a##r##0, a##r##1, a##r##2, a##r##3);                                                      \
        _mm_storeu_ps(y + (r) * n, _mm_add_ps(accumulate ? _mm_loadu_ps(y + (r) * n) : bias4, sums));               \
    }
#define TILE(R, ACCS, DOTS, PUTS)                                                                                    \
    static inline void tile_##R(const uint16_t* x, const uint16_t* w0, long k, int chunks, __mmask32 last,           \
                                __m128 bias4, float* y, long n, const uint16_t* ahead, int accumulate)               \
    {                                                                                                                \
        const uint16_t* w1 = w0 + k; const uint16_t* w2 = w1 + k; const uint16_t* w3 = w2 + k;                       \
        ACCS                                                                                                         \
        for (int c = 0; c < chunks; c++)                                                                             \
        {                                                                                                            \
            __mmask32 mask = c == chunks - 1 ? last : 0xFFFFFFFFu;                                                   \
            long o = (long)c * 32;                                                                                   \
            __m512bh q0 = load_chunk(w0 + o, mask), q1 = load_chunk(w1 + o, mask);                                   \
            __m512bh q2 = load_chunk(w2 + o, mask), q3 = load_chunk(w3 + o, mask);                                   \
            if (ahead)                                                                                               \
            {                                                                                                        \
                _mm_prefetch((const char*)(ahead + o), _MM_HINT_T0);                                                 \
                _mm_prefetch((const char*)(ahead + k + o), _MM_HINT_T0);                                             \
                _mm_prefetch((const char*)(ahead + 2 * k + o), _MM_HINT_T0);                                         \
                _mm_prefetch((const char*)(ahead + 3 * k + o), _MM_HINT_T0);                                         \
            }                                                                                                        \
            DOTS                                                                                                     \
        }                                                                                                            \
        PUTS                                                                                                         \
    }
TILE(6, ACC(0) ACC(1) ACC(2) ACC(3) ACC(4) ACC(5), DOT(0) DOT(1) DOT(2) DOT(3) DOT(4) DOT(5), PUT(0) PUT(1) PUT(2) PUT(3) PUT(4) PUT(5))
TILE(4, ACC(0) ACC(1) ACC(2) ACC(3), DOT(0) DOT(1) DOT(2) DOT(3), PUT(0) PUT(1) PUT(2) PUT(3))
TILE(2, ACC(0) ACC(1), DOT(0) DOT(1), PUT(0) PUT(1))
TILE(1, ACC(0), DOT(0), PUT(0))

// y[m, n] = bias[n] + Σ_k x[m, k]·w[n, k] for every row m < rows and the weight rows n in [n0, n1).
// x: bf16 [rows, k]; w: bf16 [n, k]; y: fp32 [rows, n] (row stride n); bias: fp32 [n] or NULL.
EXPORT void metastone_bf16_matmul_rows(const uint16_t* x, const uint16_t* w, const float* bias, float* y,
                                       int rows, int n, int k, int n0, int n1)
{
    int chunks = (k + 31) / 32;
    __mmask32 full = 0xFFFFFFFFu, last = (k % 32) ? (__mmask32)((1u << (k % 32)) - 1) : full;
    // Activation rows in tiles of 6, the rest in 4, 2 and 1; a remainder of 2 becomes 4 + 4 (32 rows: 6·4 + 4 + 4).
    int sixes = rows / 6, rest = rows % 6;
    if (rest == 2 && sixes > 0) { sixes--; rest += 6; }
    // K in blocks of BLOCK_CHUNKS chunks, so the four weight rows of a block (4·32·BLOCK_CHUNKS·2 bytes, 8 KB) stay in
    // L1 (32 KB on Zen 4) while every activation row passes: the weights stream from memory once per call. Without
    // the blocks, FFN down's rows (K = 4864, 39 KB a tile) were read again from L2 for every tile of activation rows.
    int blocks = (chunks + BLOCK_CHUNKS - 1) / BLOCK_CHUNKS;
    int tiles = (n1 - n0) / 4;
    for (int s = 0; s < tiles * blocks; s++)
    {
        int j = n0 + 4 * (s / blocks), b = s % blocks;
        long k0 = (long)b * BLOCK_CHUNKS * 32;
        int blockChunks = b == blocks - 1 ? chunks - b * BLOCK_CHUNKS : BLOCK_CHUNKS;
        __mmask32 blockLast = b == blocks - 1 ? last : full;
        const uint16_t* w0 = w + (long)j * k + k0;
        __m128 bias4 = bias ? _mm_loadu_ps(bias + j) : _mm_setzero_ps();
        float* yj = y + j;
        const uint16_t* xb = x + k0;
        // The first tile of activation rows fetches the weight rows of the block PREFETCH_BLOCKS ahead into L1:
        // measured, the hardware prefetcher alone left the dot products waiting on memory (59 against 90 ms for all
        // of a 0.5B step's matmuls at 32 rows).
        int t = s + PREFETCH_BLOCKS;
        const uint16_t* ahead = PREFETCH_BLOCKS > 0 && t < tiles * blocks
            ? w + (long)(n0 + 4 * (t / blocks)) * k + (long)(t % blocks) * BLOCK_CHUNKS * 32 : NULL;
        int m = 0, acc = b > 0;
        for (int i = 0; i < sixes; i++, m += 6, ahead = NULL) tile_6(xb + (long)m * k, w0, k, blockChunks, blockLast, bias4, yj + (long)m * n, n, ahead, acc);
        int left = rest;
        for (; left >= 4; left -= 4, m += 4, ahead = NULL) tile_4(xb + (long)m * k, w0, k, blockChunks, blockLast, bias4, yj + (long)m * n, n, ahead, acc);
        for (; left >= 2; left -= 2, m += 2, ahead = NULL) tile_2(xb + (long)m * k, w0, k, blockChunks, blockLast, bias4, yj + (long)m * n, n, ahead, acc);
        for (; left >= 1; left -= 1, m += 1, ahead = NULL) tile_1(xb + (long)m * k, w0, k, blockChunks, blockLast, bias4, yj + (long)m * n, n, ahead, acc);
    }
    int j = n0 + 4 * tiles;
    for (; j < n1; j++)   // fewer than four weight rows left
    {
        const uint16_t* w0 = w + (long)j * k;
        float b0 = bias ? bias[j] : 0;
        for (int m = 0; m < rows; m++)
        {
            const uint16_t* x0 = x + (long)m * k;
            __m512 a0 = _mm512_setzero_ps();
            for (int c = 0; c < chunks; c++)
            {
                __mmask32 mask = c == chunks - 1 ? last : full;
                a0 = _mm512_dpbf16_ps(a0, load_chunk(x0 + (long)c * 32, mask), load_chunk(w0 + (long)c * 32, mask));
            }
            y[(long)m * n + j] = b0 + _mm512_reduce_add_ps(a0);
        }
    }
}

// ---- Activation-packed kernel: weights broadcast, no horizontal sums (issue 13, seventh session) ----
// The kernel above multiplies rows by rows, so every output ends in a horizontal sum, and the activations (32 rows of a
// 1,024-wide block, 64 KB) come from L2 for every tile. This one packs the activations instead: 16 rows of bf16 pairs
// along K in each vector, xp[kp][m] = (x[m][2kp], x[m][2kp+1]), and broadcasts a pair of one weight row, so that one
// vdpbf16ps adds that pair's products to 16 rows' outputs at once. A tile is 12 weight rows × 32 activation rows
// (24 accumulators, 2 activation loads and 12 four-byte broadcasts per 24 dot products); the weights stream from memory
// exactly once, in their stored row-major layout, and the 32 × 12 results are transposed in registers at the end.
// Measured on the 0.5B shape's matmuls at 32 rows (tests/tools/bf16-gemm-probe/kernel.c): ~42–46 ms a step against
// 56–60 for the kernel above. At 16 rows and fewer it loses (a vector holds 16 rows: half of it is padding at 8), so
// NativeBf16 uses it from ActivationPackedMinRows rows.

// Transposes 16 vectors of 16 32-bit lanes in place: lane j of r[i] goes to lane i of r[j].
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++)
    {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++)
    {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    // r[4i + e] now holds, in its 128-bit lane L, lane 4L + e of rows 4i .. 4i + 3.
    for (int e = 0; e < 4; e++)
    {
        __m512 ab0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x44), ab1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xEE);
        __m512 cd0 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x44), cd1 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xEE);
        t[e] = _mm512_shuffle_f32x4(ab0, cd0, 0x88);
        t[4 + e] = _mm512_shuffle_f32x4(ab0, cd0, 0xDD);
        t[8 + e] = _mm512_shuffle_f32x4(ab1, cd1, 0x88);
        t[12 + e] = _mm512_shuffle_f32x4(ab1, cd1, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

// Rows padded to a whole number of 16-row vectors: the packed activations' row stride.
static inline int padded_rows(int rows) { return (rows + 15) / 16 * 16; }

// xp = the fp32 activations x [rows, k] rounded to bf16 (nearest even) and packed as above: k/2 pairs × padded_rows(rows)
// 32-bit elements, the padding rows zero. k must be a multiple of 16.
EXPORT void metastone_bf16_pack_activations(const float* x, uint32_t* xp, int rows, int k)
{
    int mp = padded_rows(rows);
    for (int m0 = 0; m0 < mp; m0 += 16)
        for (int k0 = 0; k0 < k; k0 += 32)
        {
            int half = k - k0 < 32;   // the last 16 of a width that is an odd multiple of 16
            __m512 r[16];
            for (int i = 0; i < 16; i++)
            {
                const float* row = x + (long)(m0 + i) * k + k0;
                r[i] = m0 + i >= rows ? _mm512_setzero_ps()
                    : (__m512)_mm512_cvtne2ps_pbh(half ? _mm512_setzero_ps() : _mm512_loadu_ps(row + 16), _mm512_loadu_ps(row));
            }
            transpose16(r);   // r[i] = pair k0/2 + i of the 16 rows
            for (int i = 0; i < (half ? 8 : 16); i++) _mm512_storeu_ps((float*)(xp + (long)(k0 / 2 + i) * mp + m0), r[i]);
        }
}

#define PACKED_TILE_ROWS 12

// Writes a tile's accumulators, acc[r][v] = outputs j + r of the 16 activation rows m0 + 16v .. (lane = row), to
// y[row, j + r] plus bias[j + r]: transposed in registers, one masked store of R outputs per row.
static inline __attribute__((always_inline)) void store_tile(__m512 acc[PACKED_TILE_ROWS][2], const float* bias, float* y,
    long n, int rows, int m0, int j, int R, int V)
{
    __mmask16 lanes = (__mmask16)((1u << R) - 1);
    __m512 bias16 = bias ? _mm512_maskz_loadu_ps(lanes, bias + j) : _mm512_setzero_ps();
    for (int v = 0; v < V; v++)
    {
        __m512 t[16];
        for (int r = 0; r < 16; r++) t[r] = r < R && r < PACKED_TILE_ROWS ? acc[r][v] : _mm512_setzero_ps();
        transpose16(t);   // t[i] = row m0 + 16v + i's outputs j .. j + R
        int count = rows - m0 - 16 * v;
        if (count > 16) count = 16;
        for (int i = 0; i < count; i++) _mm512_mask_storeu_ps(y + (long)(m0 + 16 * v + i) * n + j, lanes, _mm512_add_ps(t[i], bias16));
    }
}

// y[m0 .. m0 + 16·V, j .. j + R) for R ≤ 12 weight rows from j, V = 1 or 2 vectors of activation rows from m0 (rows
// of y past `rows` are not written). R and V are constants where it is inlined with constants, so the loops unroll.
static inline __attribute__((always_inline)) void packed_tile(const uint32_t* xp, int mp, int m0, const uint16_t* w,
    long k, const float* bias, float* y, long n, int rows, int j, int R, int V)
{
    __m512 acc[PACKED_TILE_ROWS][2];
    for (int r = 0; r < PACKED_TILE_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint16_t* w0 = w + (long)j * k;
    const uint32_t* x0 = xp + m0;
    long pairs = k / 2;
    for (long kp = 0; kp < pairs; kp++)
    {
        __m512bh lo = (__m512bh)_mm512_loadu_si512(x0 + kp * mp), hi = lo;
        if (V > 1) hi = (__m512bh)_mm512_loadu_si512(x0 + kp * mp + 16);
        for (int r = 0; r < PACKED_TILE_ROWS; r++)
            if (r < R)
            {
                int pair;
                __builtin_memcpy(&pair, w0 + r * k + 2 * kp, sizeof pair);
                __m512bh b = (__m512bh)_mm512_set1_epi32(pair);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], lo, b);
                if (V > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], hi, b);
            }
    }
    store_tile(acc, bias, y, n, rows, m0, j, R, V);
}

// The drivers' loop, shared by the three activation-packed kernels: activation rows in blocks of 32 (two 16-row vectors;
// a last block of at most 16 rows takes one), weight rows [n0, n1) in tiles of PACKED_TILE_ROWS and a remainder tile.
// Each call site passes a constant V, so the tile function is inlined and unrolled once per vector count.
#define FOR_EACH_TILE(TILE, X)                                                                                       \
    for (int m0 = 0, mp = padded_rows(rows); m0 < rows; m0 += 32)                                                    \
    {                                                                                                                \
        int j = n0;                                                                                                  \
        if (rows - m0 > 16)                                                                                          \
        {                                                                                                            \
            for (; j + PACKED_TILE_ROWS <= n1; j += PACKED_TILE_ROWS) TILE(X, mp, m0, w, k, bias, y, n, rows, j, PACKED_TILE_ROWS, 2); \
            if (j < n1) TILE(X, mp, m0, w, k, bias, y, n, rows, j, n1 - j, 2);                                      \
        }                                                                                                            \
        else                                                                                                         \
        {                                                                                                            \
            for (; j + PACKED_TILE_ROWS <= n1; j += PACKED_TILE_ROWS) TILE(X, mp, m0, w, k, bias, y, n, rows, j, PACKED_TILE_ROWS, 1); \
            if (j < n1) TILE(X, mp, m0, w, k, bias, y, n, rows, j, n1 - j, 1);                                      \
        }                                                                                                            \
    }

// y[m, n] = bias[n] + Σ_k x[m, k]·w[n, k] for every row m < rows and the weight rows n in [n0, n1), from activations
// packed by metastone_bf16_pack_activations. w: bf16 [n, k], row-major as stored; y: fp32 [rows, n]; bias fp32 or NULL.
EXPORT void metastone_bf16_matmul_packed(const uint32_t* xp, const uint16_t* w, const float* bias, float* y,
                                         int rows, int n, int k, int n0, int n1)
{ FOR_EACH_TILE(packed_tile, xp); }

// ---- The same for fp32 weights (fp32 models' decode batches) ----
// fp32 activations transposed, xt[kk][m] = x[m][kk] (rows padded to 16), and one fp32 weight broadcast per FMA: 12 × 32
// tiles, 2 activation loads and 12 broadcasts per 24 FMAs, the weights streamed once in their stored layout. Sums are
// plain fp32 FMAs over K, as in HostLinear, in another order. AVX-512F only, but shipped in this library (which
// NativeBf16 loads on CPUs with avx512_bf16).

// xt = x [rows, k] transposed to k × padded_rows(rows), the padding rows zero; k a multiple of 16.
EXPORT void metastone_fp32_pack_activations(const float* x, float* xt, int rows, int k)
{
    int mp = padded_rows(rows);
    for (int m0 = 0; m0 < mp; m0 += 16)
        for (int k0 = 0; k0 < k; k0 += 16)
        {
            __m512 r[16];
            for (int i = 0; i < 16; i++) r[i] = m0 + i < rows ? _mm512_loadu_ps(x + (long)(m0 + i) * k + k0) : _mm512_setzero_ps();
            transpose16(r);   // r[i] = column k0 + i of the 16 rows
            for (int i = 0; i < 16; i++) _mm512_storeu_ps(xt + (long)(k0 + i) * mp + m0, r[i]);
        }
}

static inline __attribute__((always_inline)) void fp32_tile(const float* xt, int mp, int m0, const float* w, long k,
    const float* bias, float* y, long n, int rows, int j, int R, int V)
{
    __m512 acc[PACKED_TILE_ROWS][2];
    for (int r = 0; r < PACKED_TILE_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const float* w0 = w + (long)j * k;
    const float* x0 = xt + m0;
    for (long kk = 0; kk < k; kk++)
    {
        __m512 lo = _mm512_loadu_ps(x0 + kk * mp), hi = lo;
        if (V > 1) hi = _mm512_loadu_ps(x0 + kk * mp + 16);
        for (int r = 0; r < PACKED_TILE_ROWS; r++)
            if (r < R)
            {
                __m512 b = _mm512_set1_ps(w0[r * k + kk]);
                acc[r][0] = _mm512_fmadd_ps(lo, b, acc[r][0]);
                if (V > 1) acc[r][1] = _mm512_fmadd_ps(hi, b, acc[r][1]);
            }
    }
    store_tile(acc, bias, y, n, rows, m0, j, R, V);
}

// y[m, n] = bias[n] + Σ_k x[m, k]·w[n, k] for m < rows and weight rows n in [n0, n1), from activations transposed by
// metastone_fp32_pack_activations. w: fp32 [n, k] row-major; y: fp32 [rows, n]; bias fp32 or NULL.
EXPORT void metastone_fp32_matmul_packed(const float* xt, const float* w, const float* bias, float* y,
                                         int rows, int n, int k, int n0, int n1)
{ FOR_EACH_TILE(fp32_tile, xt); }

// ---- bf16 weights, exact: fp32 activations times the weights widened, for prefill ----
// The prefill keeps bf16 models' keys and values computed from unrounded activations (the bf16 numerics target), which
// vdpbf16ps cannot do. Same transposed activations as the fp32 kernel; a four-byte broadcast of a weight pair, split
// into two fp32 vectors by a shift and a mask (bf16 is the high half of an fp32), feeds two FMAs per activation vector.
static inline __attribute__((always_inline)) void widened_tile(const float* xt, int mp, int m0, const uint16_t* w, long k,
    const float* bias, float* y, long n, int rows, int j, int R, int V)
{
    __m512 acc[PACKED_TILE_ROWS][2];
    for (int r = 0; r < PACKED_TILE_ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint16_t* w0 = w + (long)j * k;
    const float* x0 = xt + m0;
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    for (long kk = 0; kk < k; kk += 2)
    {
        __m512 lo0 = _mm512_loadu_ps(x0 + kk * mp), hi0 = lo0, lo1 = _mm512_loadu_ps(x0 + (kk + 1) * mp), hi1 = lo1;
        if (V > 1)
        {
            hi0 = _mm512_loadu_ps(x0 + kk * mp + 16);
            hi1 = _mm512_loadu_ps(x0 + (kk + 1) * mp + 16);
        }
        for (int r = 0; r < PACKED_TILE_ROWS; r++)
            if (r < R)
            {
                int pair;
                __builtin_memcpy(&pair, w0 + r * k + kk, sizeof pair);
                __m512i both = _mm512_set1_epi32(pair);
                __m512 first = _mm512_castsi512_ps(_mm512_slli_epi32(both, 16));       // w[kk]
                __m512 second = _mm512_castsi512_ps(_mm512_and_si512(both, high));      // w[kk + 1]
                acc[r][0] = _mm512_fmadd_ps(lo0, first, acc[r][0]);
                acc[r][0] = _mm512_fmadd_ps(lo1, second, acc[r][0]);
                if (V > 1)
                {
                    acc[r][1] = _mm512_fmadd_ps(hi0, first, acc[r][1]);
                    acc[r][1] = _mm512_fmadd_ps(hi1, second, acc[r][1]);
                }
            }
    }
    store_tile(acc, bias, y, n, rows, m0, j, R, V);
}

// y[m, n] = bias[n] + Σ_k x[m, k]·w[n, k], exact bf16 weights times the fp32 activations transposed by
// metastone_fp32_pack_activations, summed in fp32; m < rows, weight rows n in [n0, n1); k a multiple of 16.
EXPORT void metastone_bf16_matmul_exact(const float* xt, const uint16_t* w, const float* bias, float* y,
                                        int rows, int n, int k, int n0, int n1)
{ FOR_EACH_TILE(widened_tile, xt); }
