/* The floor under read_key(p, 32) + destroy(): the same system calls in C.
 *
 *     cc -O2 bench/floor.c -o /tmp/floor && /tmp/floor PATH_TO_A_32_BYTE_FILE
 *
 * Prints the cost of our key's life as the allocator makes it now (a free
 * slot is writable: openat2, fstat, read, read, close, then READONLY when
 * filled and READWRITE again to wipe it, two mprotect calls) and of the plain
 * read alone, to show how much of read_key's cost is the protection itself
 * rather than Python.
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
struct how { uint64_t flags, mode, resolve; };
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
int main(int argc, char **argv){
  const char *path = argc > 1 ? argv[1] : "/tmp/k32";
  size_t P=4096; int N=100000;
  char *b = mmap(0, 3*P, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  mlock2(b, 3*P, MLOCK_ONFAULT);
  mprotect(b+P,P,PROT_READ|PROT_WRITE);   /* a free slot is kept writable */
  char *d = b + 2*P - 32; struct stat st; char probe;
  struct how h = { O_RDONLY|O_NOFOLLOW|O_NOCTTY|O_CLOEXEC|O_NONBLOCK, 0, 0x02|0x04 };
  double t0=now();
  for(int i=0;i<N;i++){
    memset(d-16,0,48);
    int fd=(int)syscall(SYS_openat2, AT_FDCWD, path, &h, sizeof h);
    fstat(fd,&st); read(fd,d,32); read(fd,&probe,1);
    close(fd);
    mprotect(b+P,P,PROT_READ);
    mprotect(b+P,P,PROT_READ|PROT_WRITE); memset(d,0,32);
  }
  double t1=now();
  printf("C floor of our read_key: %.2f us\n",(t1-t0)/N);
  t0=now();
  for(int i=0;i<N;i++){
    int fd=open(path, O_RDONLY|O_CLOEXEC);
    fstat(fd,&st); read(fd,d,32); read(fd,&probe,1); close(fd);
  }
  t1=now(); printf("C open/fstat/read/read/close: %.2f us\n",(t1-t0)/N);
  t0=now();
  for(int i=0;i<N;i++){ mprotect(b+P,P,PROT_READ|PROT_WRITE); mprotect(b+P,P,PROT_NONE);}
  t1=now(); printf("mprotect pair NONE<->RW: %.2f us\n",(t1-t0)/N);
}
