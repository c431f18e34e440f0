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
#define ZTP_ADMISSION_RATE_ENTRIES 65536 /* source prefixes tracked by the rate limiter (LRU) */
/* IPv6 extension headers the admission filter walks before the TCP header. RFC 8200 recommends
 * each header at most once (Destination Options twice), so real chains are at most 6 or 7 long;
 * anything longer is an attack or a bug, and beyond this bound the packet is dropped (fail closed,
 * counted as unparsed). 32 keeps the verifier's work small (a few thousand instructions). */
#define ZTP_IPV6_MAX_EXT_HEADERS 32
#define ZTP_STEERING_MAX_WORKERS 1024  /* [runtime] workers is at most 1024 */

/* Index into the per-CPU counters array. Slots ZTP_CTR_DENY_RULE0 + i count SYNs dropped by deny
 * rule i (the longest matching deny prefix gets the count). */
enum ztp_admission_counter {
    ZTP_CTR_ADMITTED = 0,      /* SYNs that passed every check */
    ZTP_CTR_DENIED = 1,        /* SYNs from an address in the deny list */
    ZTP_CTR_NOT_ALLOWED = 2,   /* SYNs from outside a non-empty allow list */
    ZTP_CTR_RATE_LIMITED = 3,  /* SYNs over the per-source rate */
    ZTP_CTR_UNPARSED = 4,      /* packets whose headers could not be parsed: dropped (fail closed) */
    ZTP_CTR_DENY_RULE0 = 8,
    ZTP_CTR_SLOTS = ZTP_CTR_DENY_RULE0 + ZTP_ADMISSION_MAX_RULES,
};

/* LPM_TRIE key: the kernel requires a __u32 prefix length (in bits) first, then the data. */
struct ztp_lpm_key {
    __u32 prefixlen;
    __u8 addr[16];
};

/* A source address, and the LRU rate-table key: the source address masked to the configured rate
 * prefix (ztp_rate_key). */
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
    /* Rate-table key masks (ztp_prefix_mask): IPv6 sources keep their first ipv6_rate_prefix
     * bits, IPv4-mapped ones their first 96 + ipv4_rate_prefix. Masks rather than prefix lengths,
     * so the program masks 16 bytes without a branch per byte. */
    __u8 rate_mask_v6[16];
    __u8 rate_mask_v4[16];
};

#ifndef ZTP_INLINE
#define ZTP_INLINE static inline
#endif

/* The first `bits` bits set (0..128). */
ZTP_INLINE void ztp_prefix_mask(unsigned bits, __u8 mask[16])
{
    for (unsigned i = 0; i < 16; i++) {
        const unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
        mask[i] = keep >= 8 ? 0xff : (__u8)(0xff00u >> keep);
    }
}

/* User space only (the loader's config map, the fallback's keying): the rate masks for an IPv6
 * /ipv6_prefix and an IPv4 /ipv4_prefix (the latter over the IPv4-mapped form: 96 bits more). */
ZTP_INLINE void ztp_set_rate_prefixes(struct ztp_admission_config *cfg, unsigned ipv6_prefix, unsigned ipv4_prefix)
{
    ztp_prefix_mask(ipv6_prefix, cfg->rate_mask_v6);
    ztp_prefix_mask(96 + ipv4_prefix, cfg->rate_mask_v4);
}

/* The rate-table key of a source (16-byte form, IPv4 mapped): one key per IPv6 /ipv6_rate_prefix
 * and per IPv4 /ipv4_rate_prefix. Shared by the program and the user-space fallback, so both
 * group sources identically. Why a prefix and not the address: one IPv6 host gets a whole /64
 * (SLAAC, privacy addresses, RFC 8273 per-host /64s) and can rotate through 2^64 addresses; per
 * /128 it would get a fresh bucket per SYN and flush legitimate sources out of the LRU table. */
ZTP_INLINE void ztp_rate_key(const __u8 addr[16], const struct ztp_admission_config *cfg, __u8 key[16])
{
    /* ::ffff:0:0/96, the IPv4-mapped form */
    const int v4 = addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 0 && addr[4] == 0 &&
                   addr[5] == 0 && addr[6] == 0 && addr[7] == 0 && addr[8] == 0 && addr[9] == 0 &&
                   addr[10] == 0xff && addr[11] == 0xff;
    const __u8 *mask = v4 ? cfg->rate_mask_v4 : cfg->rate_mask_v6;
    for (int i = 0; i < 16; i++)
        key[i] = addr[i] & mask[i];
}

/* Steering hash: murmur3 (32-bit) over the four words of the 16-byte address, seeded per process.
 * Shared so user space can say which worker a client lands on (Steering::worker_for, tests). */
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
