// Times the shipped kernel (src/MetaStone.Model/Native/metastone_bf16.c) against the first, untuned 4 × 4 kernel on
// the matmuls of a 0.5B best-of-32 decode step (issue 13). Not part of the build or CI:
//   gcc -O3 -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -fopenmp -o kernel kernel.c -lm && OMP_NUM_THREADS=2 ./kernel 32
// The correctness check uses a width that is not a multiple of 32, which only the shipped kernel handles.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>
#include <omp.h>
// The shipped kernel, compiled in (its symbols stay visible: this is one program).
#include "../../../src/MetaStone.Model/Native/metastone_bf16.c"
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef unsigned short u16;
static float bf(u16 b){unsigned u=(unsigned)b<<16; float f; memcpy(&f,&u,4); return f;}
#define LD(p) ((__m512bh)_mm512_loadu_si512(p))
#define DP(a,v,w) a=_mm512_dpbf16_ps(a,v,w)
static void v1(const u16* x,const u16* w,float* y,int M,int N,int K,int n0,int n1){
  for(int n=n0;n<n1;n+=4){
    const u16*w0=w+(long)n*K,*w1=w0+K,*w2=w1+K,*w3=w2+K;
    for(int m=0;m<M;m+=4){
      const u16*x0=x+(long)m*K,*x1=x0+K,*x2=x1+K,*x3=x2+K;
      __m512 a00=_mm512_setzero_ps(),a01=a00,a02=a00,a03=a00,a10=a00,a11=a00,a12=a00,a13=a00,a20=a00,a21=a00,a22=a00,a23=a00,a30=a00,a31=a00,a32=a00,a33=a00;
      for(int k=0;k<K;k+=32){
        __m512bh b0=LD(w0+k),b1=LD(w1+k),b2=LD(w2+k),b3=LD(w3+k),v;
        v=LD(x0+k);DP(a00,v,b0);DP(a01,v,b1);DP(a02,v,b2);DP(a03,v,b3);
        v=LD(x1+k);DP(a10,v,b0);DP(a11,v,b1);DP(a12,v,b2);DP(a13,v,b3);
        v=LD(x2+k);DP(a20,v,b0);DP(a21,v,b1);DP(a22,v,b2);DP(a23,v,b3);
        v=LD(x3+k);DP(a30,v,b0);DP(a31,v,b1);DP(a32,v,b2);DP(a33,v,b3);
      }
      float*y0=y+(long)m*N+n;
      y0[0]=_mm512_reduce_add_ps(a00);y0[1]=_mm512_reduce_add_ps(a01);y0[2]=_mm512_reduce_add_ps(a02);y0[3]=_mm512_reduce_add_ps(a03);y0+=N;
      y0[0]=_mm512_reduce_add_ps(a10);y0[1]=_mm512_reduce_add_ps(a11);y0[2]=_mm512_reduce_add_ps(a12);y0[3]=_mm512_reduce_add_ps(a13);y0+=N;
      y0[0]=_mm512_reduce_add_ps(a20);y0[1]=_mm512_reduce_add_ps(a21);y0[2]=_mm512_reduce_add_ps(a22);y0[3]=_mm512_reduce_add_ps(a23);y0+=N;
      y0[0]=_mm512_reduce_add_ps(a30);y0[1]=_mm512_reduce_add_ps(a31);y0[2]=_mm512_reduce_add_ps(a32);y0[3]=_mm512_reduce_add_ps(a33);
    }
  }
}
static void v5(const u16* x,const u16* w,float* y,int M,int N,int K,int n0,int n1){ metastone_bf16_matmul_rows(x,w,NULL,y,M,N,K,n0,n1); }
// The activation-packed kernel: x is packed once per matmul (xp, filled by main before the threads start).
static uint32_t* xp;
static void v6(const u16* x,const u16* w,float* y,int M,int N,int K,int n0,int n1){ (void)x; metastone_bf16_matmul_packed(xp,w,NULL,y,M,N,K,n0,n1); }
typedef void (*kern)(const u16*,const u16*,float*,int,int,int,int,int);
static void gemm(kern f,int gran,const u16* x,const u16* w,float* y,int M,int N,int K){
  #pragma omp parallel
  { int t=omp_get_thread_num(), T=omp_get_num_threads(); int per=((N/gran+T-1)/T)*gran; int n0=t*per, n1=n0+per<N?n0+per:N; if(n0<n1) f(x,w,y,M,N,K,n0,n1); }
}

#define NV 3
int main(int argc,char**argv){
  int M=argc>1?atoi(argv[1]):32;
  kern ks[]={v1,v5,v6}; int grans[]={4,4,12}; const char* kn[]={"first 4x4","rows","packed"};
  // correctness: both shipped kernels against a double reference on bf16-rounded activations, with a bias, widths
  // that are not multiples of 32 and row counts around the 16-row vectors of the packed kernel
  { int N=50,K=1104; int Ms[]={1,5,16,17,27,32,40,64}; u16*w=malloc(N*K*2); float*b=malloc(N*4); float*xf=malloc(64*K*4); u16*x=malloc(64*K*2); float*y=malloc(64*N*4);
    xp=malloc((size_t)K/2*64*4);
    for(int i=0;i<N*K;i++) w[i]=0x3c00+(rand()%300)+((rand()&1)<<15); for(int i=0;i<N;i++) b[i]=rand()%7-3.0f;
    for(int i=0;i<64*K;i++) xf[i]=(rand()%2001-1000)/300.0f;
    metastone_fp32_to_bf16(xf,x,64L*K);
    for(int t=0;t<8;t++){ int M=Ms[t]; double md[2]={0,0};
      for(int v=0;v<2;v++){ for(int i=0;i<M*N;i++) y[i]=NAN;
        if(v==0) metastone_bf16_matmul_rows(x,w,b,y,M,N,K,0,N); else { metastone_bf16_pack_activations(xf,xp,M,K); metastone_bf16_matmul_packed(xp,w,b,y,M,N,K,0,N); }
        for(int m=0;m<M;m++)for(int n=0;n<N;n++){double r=b[n],ra=fabs(b[n]);for(int k=0;k<K;k++){double p=(double)bf(x[m*K+k])*bf(w[n*K+k]); r+=p; ra+=fabs(p);} double d=fabs(r-y[m*N+n])/ra; if(!(d<=md[v])) md[v]=isnan(d)?INFINITY:d;} }
      printf("M=%2d max |err|/sum|terms|: rows %.1e, packed %.1e\n",M,md[0],md[1]); }
    free(w);free(b);free(xf);free(x);free(y);free(xp); }
  int shapes[][2]={{1152,896},{896,896},{9728,896},{896,4864},{151936,896}}; const char* names[]={"qkv","o","gate_up","down","head"};
  int counts[]={24,24,24,24,1};
  double tt[NV]={0};
  for(int s=0;s<5;s++){
    int N=shapes[s][0],K=shapes[s][1]; int layers=counts[s];
    u16** W=malloc(sizeof(void*)*layers); for(int l=0;l<layers;l++){W[l]=aligned_alloc(64,(size_t)N*K*2); for(long i=0;i<(long)N*K;i++) W[l][i]=0x3c00+(i%97);}
    u16* x=aligned_alloc(64,(size_t)M*K*2); for(long i=0;i<(long)M*K;i++) x[i]=0x3f00+(i%13);
    float* y=aligned_alloc(64,(size_t)M*N*4);
    float* xf=aligned_alloc(64,(size_t)M*K*4); for(long i=0;i<(long)M*K;i++) xf[i]=bf(x[i]);
    xp=aligned_alloc(64,(size_t)K/2*((M+15)/16*16)*4);
    printf("%-8s N=%6d K=%5d x%2d:",names[s],N,K,layers);
    double best[NV]; for(int v=0;v<NV;v++) best[v]=1e9;
    for(int rep=0;rep<7;rep++) for(int v=0;v<NV;v++){ double t0=now(); for(int l=0;l<layers;l++){ if(v==2) metastone_bf16_pack_activations(xf,xp,M,K); gemm(ks[v],grans[v],x,W[l],y,M,N,K); } double t=now()-t0; if(t<best[v]) best[v]=t; }
    for(int v=0;v<NV;v++){ printf("  %s %6.2f ms %5.0f GF/s |",kn[v],best[v]*1e3,2.0*M*N*K*layers/best[v]/1e9); tt[v]+=best[v]; }
    printf("\n");
    for(int l=0;l<layers;l++) free(W[l]); free(W); free(x); free(y); free(xf); free(xp);
  }
  for(int v=0;v<NV;v++) printf("%s: step matmuls %.1f ms\n",kn[v],tt[v]*1e3);
}
