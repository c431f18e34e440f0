/* Types and constants shared by the BPF programs (bpf/admission.bpf.c, bpf/steering.bpf.c, compiled
 * with clang -target bpf) and their C++ loaders (bpf/admission.cpp, bpf/steering.cpp). Plain C with
 * <linux/types.h> only: both sides must agree on every byte of a map key or value.
 *
 * Addresses: one 16-byte form for both families. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d), so
 * one LPM trie holds IPv4 and IPv6 rules, one LRU table holds rate buckets for both, and a
 * dual-stack [::] listener (which sees IPv4 peers as ::ffff:a.b.c.d in user space) agrees with
 * what the program sees in the IPv4 header.
 */
#ifndef ZTP_BPF_SHARED_H
#define ZTP_BPF_SHARED_H

#include <linux/types.h>

#define ZTP_ADMISSION_MAX_RULES 1024   /* per list (allow, deny) and listener */
#define ZTP_ADMISSION_RATE_ENTRIES 65536 /* source addresses tracked by the rate limiter (LRU) */
#define ZTP_STEERING_MAX_WORKERS 1024  /* [runtime] workers is at most 1024 */

/* Index into the per-CPU counters array. Slots ZTP_CTR_DENY_RULE0 + i count SYNs dropped by deny
 * rule i (the longest matching deny prefix gets the count). */
enum ztp_admission_counter {
    ZTP_CTR_ADMITTED = 0,      /* SYNs that passed every check */
    ZTP_CTR_DENIED = 1,        /* SYNs from an address in the deny list */
    ZTP_CTR_NOT_ALLOWED = 2,   /* SYNs from outside a non-empty allow list */
    ZTP_CTR_RATE_LIMITED = 3,  /* SYNs over the per-source rate */
    ZTP_CTR_UNPARSED = 4,      /* packets whose headers could not be read: passed (fail open) */
    ZTP_CTR_DENY_RULE0 = 8,
    ZTP_CTR_SLOTS = ZTP_CTR_DENY_RULE0 + ZTP_ADMISSION_MAX_RULES,
};

/* LPM_TRIE key: the kernel requires a __u32 prefix length (in bits) first, then the data. */
struct ztp_lpm_key {
    __u32 prefixlen;
    __u8 addr[16];
};

/* LRU rate-table key: the source address. */
struct ztp_addr {
    __u8 addr[16];
};

/* The single element of the config array map. Written by user space at load and on update();
 * the program reads it per SYN. A reader may see a half-written element during update(): one SYN
 * is then judged by a mix of old and new limits, which is harmless. */
struct ztp_admission_config {
    __u64 interval_ns;   /* 1e9 / rate_per_second; 0 = no rate limit */
    __u64 tolerance_ns;  /* (burst - 1) * interval_ns: how far ahead of now a source may run */
    __u32 allow_rules;   /* entries in the allow trie; 0 = allow every address */
    __u32 reserved;
};

/* Steering hash: murmur3 (32-bit) over the four words of the 16-byte address, seeded per process.
 * Shared so user space can say which worker a client lands on (Steering::worker_for, tests). */
#ifndef ZTP_INLINE
#define ZTP_INLINE static inline
#endif

ZTP_INLINE __u32 ztp_rotl32(__u32 x, int r) { return (x << r) | (x >> (32 - r)); }

ZTP_INLINE __u32 ztp_steer_hash(const __u8 addr[16], __u32 seed)
{
    __u32 h = seed;
    for (int i = 0; i < 4; i++) {
        __u32 k = (__u32)addr[4 * i] | ((__u32)addr[4 * i + 1] << 8) | ((__u32)addr[4 * i + 2] << 16) |
                  ((__u32)addr[4 * i + 3] << 24);
        k *= 0xcc9e2d51u;
        k = ztp_rotl32(k, 15);
        k *= 0x1b873593u;
        h ^= k;
        h = ztp_rotl32(h, 13);
        h = h * 5 + 0xe6546b64u;
    }
    h ^= 16;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

#endif /* ZTP_BPF_SHARED_H */
