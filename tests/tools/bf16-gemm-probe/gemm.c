#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
// y[M,N] = x[M,K] (bf16) . W[N,K]^T (bf16), fp32 out. M multiple of 4, N multiple of 4, K multiple of 32.
static void gemm_part(const unsigned short* x, const unsigned short* w, float* y, int M, int N, int K, int n0, int n1){
  for(int n=n0;n<n1;n+=4){
    const unsigned short* w0=w+(long)n*K; const unsigned short* w1=w0+K; const unsigned short* w2=w1+K; const unsigned short* w3=w2+K;
    for(int m=0;m<M;m+=4){
      const unsigned short* x0=x+(long)m*K; const unsigned short* x1=x0+K; const unsigned short* x2=x1+K; const unsigned short* x3=x2+K;
      __m512 a00=_mm512_setzero_ps(),a01=a00,a02=a00,a03=a00,a10=a00,a11=a00,a12=a00,a13=a00,a20=a00,a21=a00,a22=a00,a23=a00,a30=a00,a31=a00,a32=a00,a33=a00;
      for(int k=0;k<K;k+=32){
        __m512bh b0=(__m512bh)_mm512_loadu_si512(w0+k),b1=(__m512bh)_mm512_loadu_si512(w1+k),b2=(__m512bh)_mm512_loadu_si512(w2+k),b3=(__m512bh)_mm512_loadu_si512(w3+k);
        __m512bh v;
        v=(__m512bh)_mm512_loadu_si512(x0+k); a00=_mm512_dpbf16_ps(a00,v,b0); a01=_mm512_dpbf16_ps(a01,v,b1); a02=_mm512_dpbf16_ps(a02,v,b2); a03=_mm512_dpbf16_ps(a03,v,b3);
        v=(__m512bh)_mm512_loadu_si512(x1+k); a10=_mm512_dpbf16_ps(a10,v,b0); a11=_mm512_dpbf16_ps(a11,v,b1); a12=_mm512_dpbf16_ps(a12,v,b2); a13=_mm512_dpbf16_ps(a13,v,b3);
        v=(__m512bh)_mm512_loadu_si512(x2+k); a20=_mm512_dpbf16_ps(a20,v,b0); a21=_mm512_dpbf16_ps(a21,v,b1); a22=_mm512_dpbf16_ps(a22,v,b2); a23=_mm512_dpbf16_ps(a23,v,b3);
        v=(__m512bh)_mm512_loadu_si512(x3+k); a30=_mm512_dpbf16_ps(a30,v,b0); a31=_mm512_dpbf16_ps(a31,v,b1); a32=_mm512_dpbf16_ps(a32,v,b2); a33=_mm512_dpbf16_ps(a33,v,b3);
      }
      float* y0=y+(long)m*N+n; float* y1=y0+N; float* y2=y1+N; float* y3=y2+N;
      y0[0]=_mm512_reduce_add_ps(a00); y0[1]=_mm512_reduce_add_ps(a01); y0[2]=_mm512_reduce_add_ps(a02); y0[3]=_mm512_reduce_add_ps(a03);
      y1[0]=_mm512_reduce_add_ps(a10); y1[1]=_mm512_reduce_add_ps(a11); y1[2]=_mm512_reduce_add_ps(a12); y1[3]=_mm512_reduce_add_ps(a13);
      y2[0]=_mm512_reduce_add_ps(a20); y2[1]=_mm512_reduce_add_ps(a21); y2[2]=_mm512_reduce_add_ps(a22); y2[3]=_mm512_reduce_add_ps(a23);
      y3[0]=_mm512_reduce_add_ps(a30); y3[1]=_mm512_reduce_add_ps(a31); y3[2]=_mm512_reduce_add_ps(a32); y3[3]=_mm512_reduce_add_ps(a33);
    }
  }
}
static void gemm(const unsigned short* x, const unsigned short* w, float* y, int M, int N, int K){
  #pragma omp parallel
  { int t=omp_get_thread_num(), T=omp_get_num_threads(); int per=((N/4+T-1)/T)*4; int n0=t*per, n1=n0+per<N?n0+per:N; if(n0<n1) gemm_part(x,w,y,M,N,K,n0,n1); }
}
int main(){
  int M=32; int shapes[][2]={{1152,896},{896,896},{9728,896},{896,4864},{151936,896}}; const char* names[]={"qkv","o","gate_up","down","head"};
  int counts[]={24,24,24,24,1};
  double totalFlop=0,totalTime=0;
  for(int s=0;s<5;s++){
    int N=shapes[s][0],K=shapes[s][1];
    int layers = counts[s];
    // separate weights per layer so the weights stream from memory as in a real forward
    unsigned short** W=malloc(sizeof(void*)*layers); for(int l=0;l<layers;l++){W[l]=aligned_alloc(64,(size_t)N*K*2); for(long i=0;i<(long)N*K;i++) W[l][i]=0x3c00+(i%97);}
    unsigned short* x=aligned_alloc(64,(size_t)M*K*2); for(long i=0;i<(long)M*K;i++) x[i]=0x3f00+(i%13);
    float* y=aligned_alloc(64,(size_t)M*N*4);
    double best=1e9;
    for(int rep=0;rep<7;rep++){ double t0=now(); for(int l=0;l<layers;l++) gemm(x,W[l],y,M,N,K); double t=now()-t0; if(t<best) best=t; }
    double flop=2.0*M*N*K*layers; totalFlop+=flop; totalTime+=best;
    printf("%-8s N=%6d K=%5d x%2d: %7.2f ms, %6.1f GFLOP/s\n",names[s],N,K,layers,best*1e3,flop/best/1e9);
    for(int l=0;l<layers;l++) free(W[l]); free(W); free(x); free(y);
  }
  printf("all matmuls of a k=32 step: %.1f ms, %.1f GFLOP/s\n", totalTime*1e3, totalFlop/totalTime/1e9);
}
