/* Pod-lab client: one getaddrinfo() call, as an application does it.
 *
 * Built twice by run.sh: against glibc (gcc) and statically against musl
 * (musl-gcc -static).  AF_UNSPEC, SOCK_STREAM, ai_flags = 0 (no AI_ADDRCONFIG,
 * so both A and AAAA are asked whatever addresses the pod has), the way
 * Python's socket.getaddrinfo(host, port) and most runtimes call it.
 *
 * Prints one JSON line:
 *   {"ok":true|false,"addresses":[...],"rc":N,"error":"EAI_...","elapsed_ms":F}
 * and exits 0 on success, 1 on failure, 2 on usage error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static const char *eai_name(int rc) {
    switch (rc) {
    case 0: return "OK";
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY: return "EAI_ADDRFAMILY";
#endif
    case EAI_AGAIN: return "EAI_AGAIN";
    case EAI_BADFLAGS: return "EAI_BADFLAGS";
    case EAI_FAIL: return "EAI_FAIL";
    case EAI_FAMILY: return "EAI_FAMILY";
    case EAI_MEMORY: return "EAI_MEMORY";
#ifdef EAI_NODATA
    case EAI_NODATA: return "EAI_NODATA";
#endif
    case EAI_NONAME: return "EAI_NONAME";
    case EAI_SERVICE: return "EAI_SERVICE";
    case EAI_SOCKTYPE: return "EAI_SOCKTYPE";
    case EAI_SYSTEM: return "EAI_SYSTEM";
    default: return "EAI_OTHER";
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 2;
    }
    struct addrinfo hints, *res = NULL, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = 0;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = getaddrinfo(argv[1], "443", &hints, &res);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;

    printf("{\"ok\":%s,\"addresses\":[", rc == 0 ? "true" : "false");
    int first = 1;
    for (ai = res; rc == 0 && ai; ai = ai->ai_next) {
        char buf[INET6_ADDRSTRLEN];
        const void *src;
        if (ai->ai_family == AF_INET)
            src = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            src = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        else
            continue;
        if (!inet_ntop(ai->ai_family, src, buf, sizeof buf))
            continue;
        printf("%s\"%s\"", first ? "" : ",", buf);
        first = 0;
    }
    printf("],\"rc\":%d,\"error\":", rc);
    if (rc == 0)
        printf("null");
    else
        printf("\"%s\"", eai_name(rc));
    printf(",\"elapsed_ms\":%.3f}\n", ms);
    if (res)
        freeaddrinfo(res);
    return rc == 0 ? 0 : 1;
}
