// probe_ktls() inside a kTLS kernel: every version × cipher must be reported working in both
// directions (each checked against OpenSSL by the probe itself), and the reference record codec
// the probe relies on must reject what it should.
#include <set>

#include <gtest/gtest.h>

#include "crypto/ktls_probe.hpp"
#include "tests/ktls/ktls_test_util.hpp"

namespace ztp::ktls_test {
namespace {

TEST(KtlsProbe, AllVersionsAndCiphersBothDirections) {
    const auto s0 = tls_stat();
    const crypto::KtlsProbe p = crypto::probe_ktls();
    ASSERT_TRUE(p.ulp_available) << p.why_not;
    EXPECT_TRUE(p.why_not.empty());
    ASSERT_EQ(p.entries.size(), 6u);
    std::set<std::pair<int, int>> seen;
    for (const auto& e : p.entries) {
        SCOPED_TRACE(std::string("TLS ") + config::to_string(e.version) + " " + config::to_string(e.cipher));
        EXPECT_TRUE(e.tx) << e.error;
        EXPECT_TRUE(e.rx) << e.error;
        EXPECT_TRUE(e.error.empty()) << e.error;
        seen.insert({static_cast<int>(e.version), static_cast<int>(e.cipher)});
    }
    EXPECT_EQ(seen.size(), 6u) << "each combination exactly once";
    // The probe really installed keys: one TX and one RX socket per combination.
    const auto s1 = tls_stat();
    EXPECT_GE(s1.at("TlsTxSw") - s0.at("TlsTxSw"), 6);
    EXPECT_GE(s1.at("TlsRxSw") - s0.at("TlsRxSw"), 6);
    // ...and closed them again.
    EXPECT_EQ(s1.at("TlsCurrTxSw"), s0.at("TlsCurrTxSw"));
    EXPECT_EQ(s1.at("TlsCurrRxSw"), s0.at("TlsCurrRxSw"));
}

class ReferenceCodec : public testing::TestWithParam<Param> {};

TEST_P(ReferenceCodec, RoundTripAndTamperDetection) {
    namespace ref = crypto::ktls_reference;
    const auto [v, c] = GetParam();
    const Keys k = keys(c, 0x21);
    const auto msg = pattern(300);
    auto rec = ref::seal_record(v, c, k.key(), k.iv, 42, crypto::kRecordHandshake, msg);
    ASSERT_TRUE(rec.ok()) << rec.error().message();
    EXPECT_EQ(ref::record_size(*rec), rec->size());

    auto o = ref::open_record(v, c, k.key(), k.iv, 42, *rec);
    ASSERT_TRUE(o.ok()) << o.error().message();
    EXPECT_EQ(o->type, crypto::kRecordHandshake);
    EXPECT_TRUE(o->plaintext == msg);

    EXPECT_EQ(err_code(ref::open_record(v, c, k.key(), k.iv, 43, *rec)), EBADMSG) << "wrong sequence number";
    auto tampered = *rec;
    tampered.back() ^= 0x80;  // tag
    EXPECT_EQ(err_code(ref::open_record(v, c, k.key(), k.iv, 42, tampered)), EBADMSG);
    auto truncated = *rec;
    truncated.pop_back();
    EXPECT_EQ(err_code(ref::open_record(v, c, k.key(), k.iv, 42, truncated)), EINVAL);
    const std::vector<uint8_t> too_big(16385);
    EXPECT_EQ(err_code(ref::seal_record(v, c, k.key(), k.iv, 0, crypto::kRecordApplicationData, too_big)),
              EMSGSIZE);
}

INSTANTIATE_TEST_SUITE_P(All, ReferenceCodec, testing::ValuesIn(all_params()), param_name);

}  // namespace
}  // namespace ztp::ktls_test
