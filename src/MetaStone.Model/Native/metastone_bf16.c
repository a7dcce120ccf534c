// bf16 × bf16 → fp32 matrix products with AVX512-BF16 (vdpbf16ps), for MetaStone's batched decode steps (issue 13).
// .NET 10 has no AVX512-BF16 intrinsic, hence C. Built by build.sh into linux-x64/libmetastone_bf16.so, which is checked
// in (the build and CI need no C compiler); MetaStone.Model.Kernels.NativeBf16 loads it and calls it only on CPUs that
// report avx512_bf16. No threads here: the caller splits the weight rows among its own threads.
#include <immintrin.h>
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

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

// y[m, n] = bias[n] + Σ_k x[m, k]·w[n, k] for every row m < rows and the weight rows n in [n0, n1).
// x: bf16 [rows, k]; w: bf16 [n, k]; y: fp32 [rows, n] (row stride n); bias: fp32 [n] or NULL.
EXPORT void metastone_bf16_matmul_rows(const uint16_t* x, const uint16_t* w, const float* bias, float* y,
                                       int rows, int n, int k, int n0, int n1)
{
    int chunks = (k + 31) / 32;
    __mmask32 full = 0xFFFFFFFFu, last = (k % 32) ? (__mmask32)((1u << (k % 32)) - 1) : full;
    int j = n0;
    // Four weight rows against four activation rows: 16 accumulators; the four weight rows (4·k·2 bytes) stay in L1
    // while every activation row passes, so the weights stream from memory once.
    for (; j + 4 <= n1; j += 4)
    {
        const uint16_t* w0 = w + (long)j * k; const uint16_t* w1 = w0 + k; const uint16_t* w2 = w1 + k; const uint16_t* w3 = w2 + k;
        float b0 = bias ? bias[j] : 0, b1 = bias ? bias[j + 1] : 0, b2 = bias ? bias[j + 2] : 0, b3 = bias ? bias[j + 3] : 0;
        int m = 0;
        for (; m + 4 <= rows; m += 4)
        {
            const uint16_t* x0 = x + (long)m * k; const uint16_t* x1 = x0 + k; const uint16_t* x2 = x1 + k; const uint16_t* x3 = x2 + k;
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (int c = 0; c < chunks; c++)
            {
                __mmask32 mask = c == chunks - 1 ? last : full;
                long o = (long)c * 32;
                __m512bh q0 = load_chunk(w0 + o, mask), q1 = load_chunk(w1 + o, mask), q2 = load_chunk(w2 + o, mask), q3 = load_chunk(w3 + o, mask);
                __m512bh v = load_chunk(x0 + o, mask);
                a00 = _mm512_dpbf16_ps(a00, v, q0); a01 = _mm512_dpbf16_ps(a01, v, q1); a02 = _mm512_dpbf16_ps(a02, v, q2); a03 = _mm512_dpbf16_ps(a03, v, q3);
                v = load_chunk(x1 + o, mask);
                a10 = _mm512_dpbf16_ps(a10, v, q0); a11 = _mm512_dpbf16_ps(a11, v, q1); a12 = _mm512_dpbf16_ps(a12, v, q2); a13 = _mm512_dpbf16_ps(a13, v, q3);
                v = load_chunk(x2 + o, mask);
                a20 = _mm512_dpbf16_ps(a20, v, q0); a21 = _mm512_dpbf16_ps(a21, v, q1); a22 = _mm512_dpbf16_ps(a22, v, q2); a23 = _mm512_dpbf16_ps(a23, v, q3);
                v = load_chunk(x3 + o, mask);
                a30 = _mm512_dpbf16_ps(a30, v, q0); a31 = _mm512_dpbf16_ps(a31, v, q1); a32 = _mm512_dpbf16_ps(a32, v, q2); a33 = _mm512_dpbf16_ps(a33, v, q3);
            }
            float* y0 = y + (long)m * n + j; float* y1 = y0 + n; float* y2 = y1 + n; float* y3 = y2 + n;
            y0[0] = b0 + _mm512_reduce_add_ps(a00); y0[1] = b1 + _mm512_reduce_add_ps(a01); y0[2] = b2 + _mm512_reduce_add_ps(a02); y0[3] = b3 + _mm512_reduce_add_ps(a03);
            y1[0] = b0 + _mm512_reduce_add_ps(a10); y1[1] = b1 + _mm512_reduce_add_ps(a11); y1[2] = b2 + _mm512_reduce_add_ps(a12); y1[3] = b3 + _mm512_reduce_add_ps(a13);
            y2[0] = b0 + _mm512_reduce_add_ps(a20); y2[1] = b1 + _mm512_reduce_add_ps(a21); y2[2] = b2 + _mm512_reduce_add_ps(a22); y2[3] = b3 + _mm512_reduce_add_ps(a23);
            y3[0] = b0 + _mm512_reduce_add_ps(a30); y3[1] = b1 + _mm512_reduce_add_ps(a31); y3[2] = b2 + _mm512_reduce_add_ps(a32); y3[3] = b3 + _mm512_reduce_add_ps(a33);
        }
        for (; m < rows; m++)   // fewer than four activation rows left
        {
            const uint16_t* x0 = x + (long)m * k;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int c = 0; c < chunks; c++)
            {
                __mmask32 mask = c == chunks - 1 ? last : full;
                long o = (long)c * 32;
                __m512bh v = load_chunk(x0 + o, mask);
                a0 = _mm512_dpbf16_ps(a0, v, load_chunk(w0 + o, mask)); a1 = _mm512_dpbf16_ps(a1, v, load_chunk(w1 + o, mask));
                a2 = _mm512_dpbf16_ps(a2, v, load_chunk(w2 + o, mask)); a3 = _mm512_dpbf16_ps(a3, v, load_chunk(w3 + o, mask));
            }
            float* y0 = y + (long)m * n + j;
            y0[0] = b0 + _mm512_reduce_add_ps(a0); y0[1] = b1 + _mm512_reduce_add_ps(a1); y0[2] = b2 + _mm512_reduce_add_ps(a2); y0[3] = b3 + _mm512_reduce_add_ps(a3);
        }
    }
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
