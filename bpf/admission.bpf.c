/* Admission: drop SYNs ztproxy would refuse anyway, before they cost a handshake.
 *
 * Program type: BPF_PROG_TYPE_SOCKET_FILTER, attached with setsockopt(SO_ATTACH_BPF) to each
 * listening socket of a listener. Why a socket filter and not XDP or tc:
 *  - It is per listener, not per interface: tcp_v4_rcv()/tcp_v6_rcv() run sk_filter() (through
 *    tcp_filter()) on the listening socket for every SYN it receives, after the socket lookup, so
 *    rules apply to exactly the listener they are configured on, whatever the interface.
 *  - It works on loopback and inside containers without CAP_NET_ADMIN on an interface, without
 *    choosing a device, and it is removed with the socket: nothing is left on the host if ztproxy
 *    dies. XDP would need a device (and sees no loopback traffic in native mode), tc needs qdisc
 *    set-up and sockets-to-rules bookkeeping by port.
 *  - A dropped SYN is never answered: the client sees no SYN-ACK, retransmits, and gives up. No
 *    request socket, no SYN cookie, no accept, no TLS handshake.
 * The cost: XDP drops earlier (before the skb is allocated). For floods that matter at that level
 * an operator's XDP firewall is the right tool; this is the policy of one proxy.
 *
 * What the program sees: at tcp_filter() the skb's data already points at the TCP header (IP was
 * pulled), but the network header offset is set. So every read goes through
 * bpf_skb_load_bytes_relative(..., BPF_HDR_START_NET), which is correct both at run time and under
 * BPF_PROG_TEST_RUN (there the data starts at the IP header, which is also the network header).
 * skb->len is the TCP segment length at run time; the program never uses it except to keep it.
 *
 * Return value of a socket filter: how many bytes to keep; 0 drops the packet. Returning skb->len
 * keeps it whole.
 *
 * Accepted sockets inherit the listener's filter (sk_clone_lock copies sk_filter), so the program
 * also runs on every segment of established connections: only SYN-without-ACK segments are judged,
 * everything else passes once its headers parse. A tightened deny list therefore does not stall
 * connections already accepted; those are the drain's business.
 *
 * Plain C against <linux/bpf.h>: no vmlinux.h, no CO-RE relocations, so it loads on kernels without
 * /sys/kernel/btf/vmlinux. The .BTF section only describes our own maps.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ZTP_INLINE static __always_inline
#include "ztp_bpf_shared.h"

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, ZTP_ADMISSION_MAX_RULES);
    __type(key, struct ztp_lpm_key);
    __type(value, __u32); /* rule index in the policy's list */
    __uint(map_flags, BPF_F_NO_PREALLOC); /* LPM tries require it */
} allow_rules SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, ZTP_ADMISSION_MAX_RULES);
    __type(key, struct ztp_lpm_key);
    __type(value, __u32);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} deny_rules SEC(".maps");

/* Per-source token bucket as GCRA: one u64 per source prefix (ztp_rate_key: /64 for IPv6, /32 for
 * IPv4 by default), the "theoretical arrival time" (TAT). LRU: under a flood from many sources the
 * least recently used buckets are evicted, and an evicted source starts again with a full burst.
 * That is the price of a bounded table; keying IPv6 per /64 keeps one host from filling it. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, ZTP_ADMISSION_RATE_ENTRIES);
    __type(key, struct ztp_addr);
    __type(value, __u64);
} rate_table SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct ztp_admission_config);
} config SEC(".maps");

/* Per-CPU: no atomics on the packet path; user space sums the CPUs. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, ZTP_CTR_SLOTS);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

ZTP_INLINE void count(__u32 slot)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &slot);
    if (c)
        *c += 1;
}

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

ZTP_INLINE long load(struct __sk_buff *skb, __u32 off, void *to, __u32 len)
{
    return bpf_skb_load_bytes_relative(skb, off, to, len, BPF_HDR_START_NET);
}

/* Reads the source address (IPv4-mapped for IPv4) into `src` and the offset of the TCP header from
 * the network header. Returns 0 on success, -1 when the packet is not one we can parse: the caller
 * drops it. `src` is the LPM key itself, kept in memory by the map lookups that take its address:
 * a local copy would be split into per-byte registers by clang, whose spills on the failure paths
 * read stack slots never written, which the verifier of Linux 6.1 rejects. */
ZTP_INLINE int parse(struct __sk_buff *skb, struct ztp_lpm_key *src, __u32 *l4off)
{
    __u8 first;
    if (load(skb, 0, &first, 1))
        return -1;
    if ((first >> 4) == 4) {
        struct iphdr ip;
        if (load(skb, 0, &ip, sizeof ip))
            return -1;
        /* IHL counts 32-bit words including the options (up to 40 bytes), so ihl * 4 skips them;
         * below 5 the header is malformed. */
        if (ip.protocol != IPPROTO_TCP || ip.ihl < 5)
            return -1;
        /* A fragment other than the first holds no TCP header. At run time the stack has
         * reassembled before tcp_filter(); a fragment here is crafted: fail closed. */
        if (ip.frag_off & bpf_htons(0x1fff))
            return -1;
        __builtin_memset(src->addr, 0, 10);
        src->addr[10] = 0xff;
        src->addr[11] = 0xff;
        __builtin_memcpy(&src->addr[12], &ip.saddr, 4);
        *l4off = ip.ihl * 4;
        return 0;
    }
    if ((first >> 4) == 6) {
        struct ipv6hdr ip6;
        if (load(skb, 0, &ip6, sizeof ip6))
            return -1;
        __builtin_memcpy(src->addr, &ip6.saddr, 16);
        __u32 off = sizeof ip6;
        __u8 next = ip6.nexthdr;
        /* Extension headers before TCP are rare but legal; walk a bounded number of them (the
         * verifier needs a bound; bounded loops need Linux >= 5.3). A chain still going at the
         * bound is not parsed, and an unparsed packet is dropped: a sender cannot buy its way
         * past the rules with one header more than the bound. */
        for (int i = 0; i < ZTP_IPV6_MAX_EXT_HEADERS; i++) {
            if (next == IPPROTO_TCP)
                break;
            /* Every extension header starts with next header and length; the fragment header
             * has its offset (13 bits, in 8-byte units, then 2 reserved bits and M) next. */
            struct {
                __u8 next;
                __u8 len;
                __be16 frag_off;
            } ext;
            if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
                next != NEXTHDR_AUTH && next != NEXTHDR_FRAGMENT)
                return -1; /* ESP, No Next Header, UDP...: no TCP header we can find */
            if (load(skb, off, &ext, sizeof ext))
                return -1; /* truncated */
            if (next == NEXTHDR_FRAGMENT) {
                /* Only the first fragment carries the TCP header. At run time the stack has
                 * reassembled (and removed the fragment header) before tcp_filter(), except for
                 * an atomic fragment (offset 0, M = 0), which passes here. */
                if (ext.frag_off & bpf_htons(0xfff8))
                    return -1;
                off += 8;
            } else if (next == NEXTHDR_AUTH) {
                off += ((__u32)ext.len + 2) * 4; /* AH counts 4-byte words, minus 2 */
            } else {
                off += ((__u32)ext.len + 1) * 8; /* the others count 8-byte units, minus 1 */
            }
            next = ext.next;
        }
        if (next != IPPROTO_TCP)
            return -1;
        *l4off = off;
        return 0;
    }
    return -1;
}

SEC("socket")
int ztp_admission(struct __sk_buff *skb)
{
    const __u32 keep = skb->len;
    struct ztp_lpm_key key = {.prefixlen = 128};
    __u32 l4off = 0;
    __u8 tcp[20]; /* the fixed TCP header: byte 12 = data offset << 4, byte 13 = flags */

    /* Fail closed: a packet whose IP or TCP header we cannot parse is dropped and counted, never
     * admitted unchecked. Why drop rather than pass it on for a check after accept: in kernel mode
     * nothing judges the connection after accept, so a pass would let a denied or rate-limited
     * source in by adding headers; and a user-space recheck of every accept would charge the rate
     * twice. At run time the stack has already validated and reassembled what reaches
     * tcp_filter(), so what is dropped here is only what a sender crafted on purpose (a header
     * chain longer than the bound, a non-first fragment): on an established connection (accepted
     * sockets inherit the filter) that costs only the sender's own connection. */
    if (parse(skb, &key, &l4off) || load(skb, l4off, tcp, sizeof tcp) || (tcp[12] >> 4) < 5) {
        count(ZTP_CTR_UNPARSED);
        return 0;
    }
    /* Only a connection attempt is judged: SYN without ACK (flags CWR ECE URG ACK PSH RST SYN FIN). */
    if ((tcp[13] & 0x12) != 0x02)
        return keep;

    /* Deny wins over allow: checked first. The LPM lookup returns the longest matching rule. */
    __u32 *rule = bpf_map_lookup_elem(&deny_rules, &key);
    if (rule) {
        count(ZTP_CTR_DENIED);
        if (*rule < ZTP_ADMISSION_MAX_RULES)
            count(ZTP_CTR_DENY_RULE0 + *rule);
        return 0;
    }

    __u32 zero = 0;
    struct ztp_admission_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg)
        return keep; /* cannot happen: array maps always have their elements */

    if (cfg->allow_rules != 0 && !bpf_map_lookup_elem(&allow_rules, &key)) {
        count(ZTP_CTR_NOT_ALLOWED);
        return 0;
    }

    const __u64 interval = cfg->interval_ns;
    if (interval != 0) {
        /* GCRA: admit when the source's TAT is at most `tolerance` ahead of now, then push it one
         * interval further. The first SYN of a burst of B finds TAT <= now; the B-th finds it
         * (B-1) intervals ahead. No lock: two CPUs racing on one source may both admit (at most
         * one extra per CPU), which a rate limiter can afford; bpf_spin_lock would need map BTF
         * on every kernel we load on. */
        const __u64 now = bpf_ktime_get_ns();
        struct ztp_addr rkey;
        ztp_rate_key(key.addr, cfg, rkey.addr);
        __u64 *tat = bpf_map_lookup_elem(&rate_table, &rkey);
        if (!tat) {
            __u64 next = now + interval;
            bpf_map_update_elem(&rate_table, &rkey, &next, BPF_ANY);
        } else {
            __u64 t = *tat > now ? *tat : now;
            if (t - now > cfg->tolerance_ns) {
                count(ZTP_CTR_RATE_LIMITED);
                return 0; /* a refused SYN does not move the TAT: floods do not extend the penalty */
            }
            *tat = t + interval;
        }
    }
    count(ZTP_CTR_ADMITTED);
    return keep;
}
