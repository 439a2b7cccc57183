import Testing

@testable import TandemMedia
@testable import TandemMediaCore

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
        let j = s.index(i, offsetBy: 2)
        out.append(UInt8(s[i..<j], radix: 16)!)
        i = j
    }
    return out
}

/// Known-answer vectors: libsrtp's own validation packets (RFC 3711 AES-CM with HMAC-SHA1-80, and RFC
/// 7714 AES-128-GCM), so both profiles are checked against an independent reference.
@Suite struct SRTPKnownAnswers {
    static let plainRTP = hex("800f1234decafbadcafebabe" + String(repeating: "ab", count: 16))

    @Test func aesCMHMACSHA1_80() throws {
        let key = SRTPKeyMaterial(profile: .aes128CMSHA1_80, keyAndSalt: hex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6"))
        let out = try SRTPSession(key, direction: .outbound).protect(Self.plainRTP)
        #expect(out == hex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"))
        #expect(try SRTPSession(key, direction: .inbound).unprotect(out) == Self.plainRTP)
    }

    @Test func aeadAES128GCM() throws {
        let key = SRTPKeyMaterial(profile: .aeadAES128GCM, keyAndSalt: hex("000102030405060708090a0b0c0d0e0f" + "a0a1a2a3a4a5a6a7a8a9aaab"))
        let out = try SRTPSession(key, direction: .outbound).protect(Self.plainRTP)
        #expect(out == hex("800f1234decafbadcafebabec5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392"))
        #expect(try SRTPSession(key, direction: .inbound).unprotect(out) == Self.plainRTP)
    }

    @Test func tamperedAndReplayedPacketsAreRefused() throws {
        let key = SRTPKeyMaterial(profile: .aeadAES128GCM, keyAndSalt: hex("000102030405060708090a0b0c0d0e0f" + "a0a1a2a3a4a5a6a7a8a9aaab"))
        let packet = try SRTPSession(key, direction: .outbound).protect(Self.plainRTP)
        let inbound = try SRTPSession(key, direction: .inbound)
        var tampered = packet
        tampered[14] ^= 1
        #expect(throws: MediaError.self) { try inbound.unprotect(tampered) }
        #expect(try inbound.unprotect(packet) == Self.plainRTP)
        #expect(throws: MediaError.self) { try inbound.unprotect(packet) }
    }

    @Test func wrongKeyLengthIsAClearError() {
        #expect(throws: MediaError.self) { try SRTPSession(SRTPKeyMaterial(profile: .aeadAES128GCM, keyAndSalt: [1, 2, 3]), direction: .inbound) }
    }
}
