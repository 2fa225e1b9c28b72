// Diagnostic: LD_PRELOAD this to print the native frames of a SIGSEGV (no gdb on the GPU box).
//   gcc -shared -fPIC -O0 scripts/segv_backtrace.c -o /tmp/segv.so && LD_PRELOAD=/tmp/segv.so python3 case.py
// Each frame prints as module(+offset); addr2line -f -C -e <module> <offset> names it.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void on_segv(int sig, siginfo_t* info, void* ctx) {
  (void)ctx;
  void* frames[64];
  int n = backtrace(frames, 64);
  fprintf(stderr, "SEGV signal %d at address %p; %d frames:\n", sig, info->si_addr, n);
  for (int i = 0; i < n; ++i) {
    Dl_info d;
    if (dladdr(frames[i], &d) && d.dli_fname)
      fprintf(stderr, "  #%d %s +0x%lx (%s)\n", i, d.dli_fname, (unsigned long)((char*)frames[i] - (char*)d.dli_fbase),
              d.dli_sname ? d.dli_sname : "?");
    else
      fprintf(stderr, "  #%d %p\n", i, frames[i]);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
}
