#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  __m512 acc[12]; for(int i=0;i<12;i++) acc[i]=_mm512_setzero_ps();
  __m512bh a=(__m512bh)_mm512_set1_epi16(0x3f80), b=(__m512bh)_mm512_set1_epi16(0x3f80);
  long iters=200000000/12;
  for(int rep=0;rep<3;rep++){
  double t0=now();
  for(long i=0;i<iters;i++){
    #pragma GCC unroll 12
    for(int j=0;j<12;j++) acc[j]=_mm512_dpbf16_ps(acc[j],a,b);
    __asm__ volatile("" : "+v"(a));
  }
  double t=now()-t0; double flops=(double)iters*12*64;
  float s=0; for(int j=0;j<12;j++) s+=_mm512_reduce_add_ps(acc[j]);
  printf("dpbf16ps zmm: %.1f GFLOP/s on one thread (%.3g)\n", flops/t/1e9, s);
  __m512 f[12]; for(int j=0;j<12;j++) f[j]=_mm512_setzero_ps(); __m512 x=_mm512_set1_ps(1.0f);
  t0=now();
  for(long i=0;i<iters;i++){
    #pragma GCC unroll 12
    for(int j=0;j<12;j++) f[j]=_mm512_fmadd_ps(x,x,f[j]);
    __asm__ volatile("" : "+v"(x));
  }
  t=now()-t0; flops=(double)iters*12*32;
  s=0; for(int j=0;j<12;j++) s+=_mm512_reduce_add_ps(f[j]);
  printf("fp32 fma zmm: %.1f GFLOP/s on one thread (%.3g)\n", flops/t/1e9, s);
  }
}
