/* Steering: which worker's listening socket takes a new connection.
 *
 * Program type: BPF_PROG_TYPE_SK_REUSEPORT, attached with setsockopt(SO_ATTACH_REUSEPORT_EBPF) to
 * one socket of a SO_REUSEPORT group (the kernel attaches it to the whole group). On every SYN
 * the kernel's listener lookup runs it and takes the socket it selects from a
 * REUSEPORT_SOCKARRAY whose slot i holds worker i's listening socket.
 *
 * Policy: hash of the client's source address only (not its port). The kernel's default hashes the
 * 4-tuple, so a client's next connection lands on any worker; with the address alone it returns to
 * the same worker and finds that worker's TLS session cache (and any per-worker state) warm. The cost:
 * many clients behind one NAT address all land on one worker. An edge proxy with many clients
 * spreads well; a proxy whose traffic comes from a handful of addresses should not load this.
 *
 * The hash is seeded per process (rodata, set before load) so nobody outside can aim a crowd of
 * addresses at one worker, and the seed and worker count are read-only after load: the verifier
 * sees them as constants.
 *
 * Empty slot (a worker's socket was closed, or not yet added): bpf_sk_select_reuseport() fails
 * with ENOENT and the program returns SK_PASS without a selection; the kernel then picks by its own
 * 4-tuple hash. Connections keep flowing while workers come and go.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ZTP_INLINE static __always_inline
#include "ztp_bpf_shared.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 n_workers = 1;
const volatile __u32 hash_seed = 0;

struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, ZTP_STEERING_MAX_WORKERS); /* set to the worker count before load */
    __type(key, __u32);
    __type(value, __u64); /* update with an fd; lookups would return the socket cookie */
} workers SEC(".maps");

SEC("sk_reuseport")
int ztp_steering(struct sk_reuseport_md *md)
{
    __u8 first;
    __u8 addr[16] = {};

    /* At the listener lookup, data points at the TCP header; the network header is set. */
    if (bpf_skb_load_bytes_relative(md, 0, &first, 1, BPF_HDR_START_NET))
        return SK_PASS;
    if ((first >> 4) == 4) {
        /* IPv4 source address at offset 12, stored IPv4-mapped like everywhere else. */
        addr[10] = 0xff;
        addr[11] = 0xff;
        if (bpf_skb_load_bytes_relative(md, 12, &addr[12], 4, BPF_HDR_START_NET))
            return SK_PASS;
    } else if ((first >> 4) == 6) {
        if (bpf_skb_load_bytes_relative(md, 8, addr, 16, BPF_HDR_START_NET))
            return SK_PASS;
    } else {
        return SK_PASS;
    }

    const __u32 n = n_workers;
    if (n == 0)
        return SK_PASS;
    __u32 index = ztp_steer_hash(addr, hash_seed) % n;
    /* Errors (ENOENT: empty slot; others: socket gone or from another group) leave no selection:
     * SK_PASS then falls back to the kernel's hash. SK_DROP would refuse the connection. */
    bpf_sk_select_reuseport(md, &workers, &index, 0);
    return SK_PASS;
}
