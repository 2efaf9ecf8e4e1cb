/* Pod-lab client: what pgbouncer does with c-ares older than 1.16.
 *
 * Linked by run.sh against c-ares 1.13.0 (built from the copy bundled in
 * pycares 2.4.0's sdist).  ares_init() reads the system configuration
 * (/etc/resolv.conf, which `ip netns exec` bind-mounts: search list, ndots,
 * timeout, attempts), then one ares_gethostbyname(channel, name, AF_UNSPEC)
 * driven by a select() loop, as pgbouncer's dns backend does.
 *
 * Why this client: before 1.16, ares_gethostbyname(AF_UNSPEC) asks AAAA
 * through the WHOLE search list first (a NODATA on one candidate does not stop
 * the walk), and only falls back to A when that walk ends in ENODATA (or
 * EBADRESP/ETIMEOUT).  A walk that ends on a SERVFAIL of the bare name fails
 * the lookup, although the A of the first candidate exists.
 *
 * Prints one JSON line, in the shape of the other clients:
 *   {"ok":..,"addresses":[..],"rc":N,"error":"ARES_E..."|null,"elapsed_ms":F,"cares":"1.13.0"}
 * and exits 0 on success, 1 on failure, 2 on usage or setup error.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>

#include <ares.h>

static const char *ares_name(int rc) {
    switch (rc) {
    case ARES_SUCCESS: return "ARES_SUCCESS";
    case ARES_ENODATA: return "ARES_ENODATA";
    case ARES_EFORMERR: return "ARES_EFORMERR";
    case ARES_ESERVFAIL: return "ARES_ESERVFAIL";
    case ARES_ENOTFOUND: return "ARES_ENOTFOUND";
    case ARES_ENOTIMP: return "ARES_ENOTIMP";
    case ARES_EREFUSED: return "ARES_EREFUSED";
    case ARES_EBADQUERY: return "ARES_EBADQUERY";
    case ARES_EBADNAME: return "ARES_EBADNAME";
    case ARES_EBADFAMILY: return "ARES_EBADFAMILY";
    case ARES_EBADRESP: return "ARES_EBADRESP";
    case ARES_ECONNREFUSED: return "ARES_ECONNREFUSED";
    case ARES_ETIMEOUT: return "ARES_ETIMEOUT";
    case ARES_EOF: return "ARES_EOF";
    case ARES_EFILE: return "ARES_EFILE";
    case ARES_ENOMEM: return "ARES_ENOMEM";
    case ARES_EDESTRUCTION: return "ARES_EDESTRUCTION";
    case ARES_ENONAME: return "ARES_ENONAME";
    case ARES_ECANCELLED: return "ARES_ECANCELLED";
    default: return "ARES_EOTHER";
    }
}

struct result {
    int done;
    int status;
    char addrs[64][INET6_ADDRSTRLEN];
    int naddrs;
};

static void callback(void *arg, int status, int timeouts, struct hostent *host) {
    struct result *r = arg;
    (void)timeouts;
    r->done = 1;
    r->status = status;
    if (status != ARES_SUCCESS || host == NULL)
        return;
    for (char **p = host->h_addr_list; *p && r->naddrs < 64; p++) {
        if (inet_ntop(host->h_addrtype, *p, r->addrs[r->naddrs], INET6_ADDRSTRLEN))
            r->naddrs++;
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 2;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        fprintf(stderr, "ares_library_init: %s\n", ares_strerror(rc));
        return 2;
    }
    ares_channel channel;
    rc = ares_init(&channel);
    if (rc != ARES_SUCCESS) {
        fprintf(stderr, "ares_init: %s\n", ares_strerror(rc));
        return 2;
    }
    struct result res;
    memset(&res, 0, sizeof res);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ares_gethostbyname(channel, argv[1], AF_UNSPEC, callback, &res);
    while (!res.done) {
        fd_set readers, writers;
        FD_ZERO(&readers);
        FD_ZERO(&writers);
        int nfds = ares_fds(channel, &readers, &writers);
        if (nfds == 0)
            break;
        struct timeval tv, *tvp = ares_timeout(channel, NULL, &tv);
        select(nfds, &readers, &writers, NULL, tvp);
        ares_process(channel, &readers, &writers);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    int status = res.done ? res.status : ARES_EOF;

    printf("{\"ok\":%s,\"addresses\":[", status == ARES_SUCCESS ? "true" : "false");
    for (int i = 0; i < res.naddrs; i++)
        printf("%s\"%s\"", i ? "," : "", res.addrs[i]);
    printf("],\"rc\":%d,\"error\":", status);
    if (status == ARES_SUCCESS)
        printf("null");
    else
        printf("\"%s\"", ares_name(status));
    printf(",\"elapsed_ms\":%.3f,\"cares\":\"%s\"}\n", ms, ares_version(NULL));
    fflush(stdout);
    ares_destroy(channel);
    ares_library_cleanup();
    return status == ARES_SUCCESS ? 0 : 1;
}
