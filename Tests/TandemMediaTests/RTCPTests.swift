import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// Hand-assembled RTCP, so the expectations do not depend on the code under test.
enum RTCPWire {
    /// Client B's own media SSRC, and the relay's SSRC on leg A for B's media.
    static let bSender: UInt32 = 0xB0B0_0001
    static let relayA: UInt32 = 0x1A1A_0001
    /// The relay's outgoing SSRC on leg B, and client A's original SSRC for that media.
    static let outB: UInt32 = 0x0B0B_0001
    static let inA: UInt32 = 0x0A0A_0001
    static let unknown: UInt32 = 0xDEAD_BEEF

    static let map = RTCPTranslation(
        senders: [SSRCMapping(from: bSender, to: relayA, seqDelta: 0, tsDelta: 1000)],
        media: [SSRCMapping(from: outB, to: inA, seqDelta: 10, tsDelta: 0)])

    static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func u32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
    static func u32(_ b: [UInt8], at o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }
    static func u16(_ b: [UInt8], at o: Int) -> UInt16 { UInt16(b[o]) << 8 | UInt16(b[o + 1]) }

    /// A sub-packet with a correct length field; `padding` (a multiple of 4) sets P and appends the pad.
    static func packet(count: Int, pt: UInt8, body: [UInt8], padding: Int = 0) -> [UInt8] {
        var body = body
        if padding > 0 { body += [UInt8](repeating: 0, count: padding - 1) + [UInt8(padding)] }
        return [0x80 | (padding > 0 ? 0x20 : 0) | UInt8(count), pt] + u16(UInt16((4 + body.count) / 4 - 1)) + body
    }

    static func block(
        ssrc: UInt32, fraction: UInt8 = 0, lost: Int32 = 0, highest: UInt32, jitter: UInt32 = 0, lsr: UInt32 = 0,
        dlsr: UInt32 = 0
    ) -> [UInt8] {
        u32(ssrc) + u32(UInt32(fraction) << 24 | UInt32(bitPattern: lost) & 0xFF_FFFF) + u32(highest) + u32(jitter)
            + u32(lsr) + u32(dlsr)
    }

    static func sr(sender: UInt32, rtp: UInt32, blocks: [[UInt8]] = []) -> [UInt8] {
        let info = u32(sender) + u32(0x0102_0304) + u32(0x0506_0708) + u32(rtp) + u32(77) + u32(8888)
        return packet(count: blocks.count, pt: 200, body: info + blocks.flatMap { $0 })
    }

    static func rr(sender: UInt32, blocks: [[UInt8]] = []) -> [UInt8] {
        packet(count: blocks.count, pt: 201, body: u32(sender) + blocks.flatMap { $0 })
    }

    static func fb(pt: UInt8, fmt: Int, sender: UInt32, media: UInt32, fci: [UInt8] = [], padding: Int = 0) -> [UInt8] {
        packet(count: fmt, pt: pt, body: u32(sender) + u32(media) + fci, padding: padding)
    }

    /// One chunk with CNAME "abcd", null-terminated and padded to a word.
    static func sdes(_ ssrc: UInt32) -> [UInt8] { packet(count: 1, pt: 202, body: u32(ssrc) + [1, 4] + Array("abcd".utf8) + [0, 0]) }
    static func bye(_ ssrc: UInt32) -> [UInt8] { packet(count: 1, pt: 203, body: u32(ssrc)) }

    static func remb(_ count: Int, exponent: UInt32, mantissa: UInt32) -> [UInt8] {
        Array("REMB".utf8) + u32(UInt32(count) << 24 | exponent << 18 | mantissa)
    }

    static func translate(
        _ bytes: [UInt8], _ map: RTCPTranslation = map, summary: inout RTCPSummary,
        nack: (UInt32, UInt16) -> Bool = { _, _ in false }
    ) -> [UInt8] {
        var buffer = bytes
        let n = buffer.withUnsafeMutableBytes { RTCP.translate($0, length: bytes.count, map, summary: &summary, nack: nack) }
        return Array(buffer[0..<n])
    }

    static func translate(_ bytes: [UInt8], _ map: RTCPTranslation = map) -> [UInt8] {
        var summary = RTCPSummary()
        return translate(bytes, map, summary: &summary)
    }

    static func wellFormed(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { RTCP.isWellFormed($0, length: bytes.count) } }
}

struct NACKCall: Equatable {
    var ssrc: UInt32
    var seq: UInt16
}

/// Deterministic, so a fuzz failure reproduces.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct RTCPReportTests {
    typealias W = RTCPWire

    @Test func senderReportRewritesSenderTimestampAndBlocks() {
        let unknownBlock = W.block(ssrc: W.unknown, fraction: 3, lost: -2, highest: 0x0002_0100, jitter: 7, lsr: 1, dlsr: 2)
        let knownBlock = W.block(
            ssrc: W.outB, fraction: 25, lost: 1234, highest: 0x0003_0005, jitter: 40, lsr: 0x1111_2222, dlsr: 0x3333)
        let input = W.sr(sender: W.bSender, rtp: 0xFFFF_FF00, blocks: [unknownBlock, knownBlock])
        var summary = RTCPSummary()
        let out = W.translate(input, summary: &summary)

        #expect(out.count == 52)
        #expect(out[0] == 0x81)
        #expect(W.u16(out, at: 2) == 12)
        #expect(W.u32(out, at: 4) == W.relayA)
        #expect(out[8..<16] == input[8..<16])
        #expect(W.u32(out, at: 16) == 0x0000_02E8)  // 0xFFFFFF00 &+ 1000
        #expect(out[20..<28] == input[20..<28])
        #expect(W.u32(out, at: 28) == W.inA)
        #expect(out[32..<36] == knownBlock[4..<8])
        #expect(W.u32(out, at: 36) == 0x0002_FFFB)  // low 5 - 10 wraps to 65531, one cycle fewer
        #expect(out[40..<52] == knownBlock[12..<24])

        #expect(summary.forwardedSenderReports == [0x0304_0506])
        #expect(
            summary.reports == [
                RTCPReportBlock(
                    ssrc: W.unknown, fractionLost: 3, cumulativeLost: -2, highestSeq: 0x0002_0100, jitter: 7, lastSR: 1,
                    delaySinceLastSR: 2),
                RTCPReportBlock(
                    ssrc: W.outB, fractionLost: 25, cumulativeLost: 1234, highestSeq: 0x0003_0005, jitter: 40,
                    lastSR: 0x1111_2222, delaySinceLastSR: 0x3333),
            ])
    }

    @Test func extendedSequenceNeverWrapsBelowTheFirstCycle() {
        #expect(RTCP.unshift(0x0003_0005, by: 10) == 0x0002_FFFB)
        #expect(RTCP.unshift(0x0000_0005, by: 10) == 0x0000_FFFB)
        #expect(RTCP.unshift(0x0001_0010, by: 10) == 0x0001_0006)
    }

    @Test func anUnknownSendersReportBecomesAReceiverReportUnderTheFallback() {
        // Its NTP/RTP timing belongs to no stream the other leg has: forwarding it under one of the
        // relay's SSRCs would corrupt that stream's lip sync. Its report blocks still count.
        let input = W.sr(sender: W.unknown, rtp: 5000, blocks: [W.block(ssrc: W.outB, highest: 0x0001_0064)])
        let out = W.translate(input)
        #expect(out.count == 32)
        #expect(out[0] == 0x81 && out[1] == 201 && W.u16(out, at: 2) == 7)
        #expect(W.u32(out, at: 4) == W.relayA)
        #expect(W.u32(out, at: 8) == W.inA)
        // Alone and without blocks it is still the head of the compound packet: an empty RR.
        let bare = W.translate(W.sr(sender: W.unknown, rtp: 5000), RTCPTranslation())
        #expect(bare == [0x80, 201, 0, 1] + W.u32(1))
    }

    @Test func receiverReportSurvivesSDESAndBYE() {
        let rr = W.rr(sender: W.bSender, blocks: [W.block(ssrc: W.outB, highest: 0x0001_0064)])
        let out = W.translate(rr + W.sdes(W.bSender) + W.bye(W.bSender))
        #expect(out.count == 32)
        #expect(out[0] == 0x81 && out[1] == 201 && W.u16(out, at: 2) == 7)
        #expect(W.u32(out, at: 4) == W.relayA)
        #expect(W.u32(out, at: 8) == W.inA)
        #expect(W.u32(out, at: 16) == 0x0001_005A)
    }

    @Test func emptiedReceiverReportIsKeptOnlyFirst() {
        let rr = W.rr(sender: W.bSender, blocks: [W.block(ssrc: W.unknown, highest: 1)])
        var summary = RTCPSummary()
        let out = W.translate(rr + rr, summary: &summary)
        #expect(out == [0x80, 201, 0, 1] + W.u32(W.relayA))
        #expect(summary.reports.count == 2)
        #expect(summary.forwardedSenderReports.isEmpty)
    }
}

@Suite struct RTCPFeedbackTests {
    typealias W = RTCPWire

    @Test func pliAndFIRAreTranslatedAndCounted() {
        let input =
            W.rr(sender: W.bSender)
            + W.fb(pt: 206, fmt: 1, sender: W.bSender, media: W.outB)
            + W.fb(pt: 206, fmt: 1, sender: W.bSender, media: W.unknown)
            + W.fb(pt: 206, fmt: 4, sender: W.bSender, media: 0, fci: W.u32(W.unknown) + [7, 0, 0, 0] + W.u32(W.outB) + [9, 0, 0, 0])
            + W.fb(pt: 206, fmt: 4, sender: W.bSender, media: 0, fci: W.u32(W.unknown) + [8, 0, 0, 0])
        var summary = RTCPSummary()
        let out = W.translate(input, summary: &summary)
        let expected =
            W.rr(sender: W.relayA)
            + W.fb(pt: 206, fmt: 1, sender: W.relayA, media: W.inA)
            + W.fb(pt: 206, fmt: 4, sender: W.relayA, media: 0, fci: W.u32(W.inA) + [9, 0, 0, 0])
        #expect(out == expected)
        #expect(summary.pictureLossRequests == 2)
        #expect(summary.fullIntraRequests == 2)
        #expect(summary.remb == nil)
    }

    func nackRound(_ fci: [UInt8], answering answered: Set<UInt16>, media: UInt32 = RTCPWire.outB) -> ([UInt8], [NACKCall]) {
        var calls: [NACKCall] = []
        var summary = RTCPSummary()
        let input = W.rr(sender: W.bSender) + W.fb(pt: 205, fmt: 1, sender: W.bSender, media: media, fci: fci)
        let out = W.translate(input, summary: &summary) { ssrc, seq in
            calls.append(NACKCall(ssrc: ssrc, seq: seq))
            return answered.contains(seq)
        }
        #expect(Array(out.prefix(8)) == W.rr(sender: W.relayA))
        return (Array(out.dropFirst(8)), calls)
    }

    @Test func nackPartlyAnsweredIsRebased() {
        let (out, calls) = nackRound(W.u16(100) + W.u16(0b101), answering: [100, 103])
        #expect(calls == [NACKCall(ssrc: W.outB, seq: 100), NACKCall(ssrc: W.outB, seq: 101), NACKCall(ssrc: W.outB, seq: 103)])
        #expect(out == W.fb(pt: 205, fmt: 1, sender: W.relayA, media: W.inA, fci: W.u16(91) + W.u16(0)))
    }

    @Test func nackFullyAnsweredIsRemoved() {
        let (out, calls) = nackRound(W.u16(100) + W.u16(0b101), answering: [100, 101, 103])
        #expect(calls.map(\.seq) == [100, 101, 103])
        #expect(out.isEmpty)
    }

    @Test func nackUnansweredIsTranslated() {
        let (out, calls) = nackRound(W.u16(100) + W.u16(0b101), answering: [])
        #expect(calls.map(\.seq) == [100, 101, 103])
        #expect(out == W.fb(pt: 205, fmt: 1, sender: W.relayA, media: W.inA, fci: W.u16(90) + W.u16(0b101)))
    }

    @Test func nackDropsAnsweredFCIAndWrapsPID() {
        let (out, calls) = nackRound(W.u16(300) + W.u16(0) + W.u16(5) + W.u16(0x8000), answering: [300])
        #expect(calls.map(\.seq) == [300, 5, 21])
        #expect(out == W.fb(pt: 205, fmt: 1, sender: W.relayA, media: W.inA, fci: W.u16(65531) + W.u16(0x8000)))
    }

    @Test func nackRebasesOntoTheLastBit() {
        let (out, _) = nackRound(W.u16(100) + W.u16(0x8001), answering: [100, 101])
        #expect(out == W.fb(pt: 205, fmt: 1, sender: W.relayA, media: W.inA, fci: W.u16(106) + W.u16(0)))
    }

    @Test func nackForUnknownMediaIsOfferedThenRemoved() {
        let (out, calls) = nackRound(W.u16(100) + W.u16(0), answering: [], media: W.unknown)
        #expect(calls == [NACKCall(ssrc: W.unknown, seq: 100)])
        #expect(out.isEmpty)
    }

    @Test func rembIsParsedAndItsSSRCsTranslated() {
        // 1_000_000 bps = 250_000 << 2 (the mantissa has 18 bits).
        let input = W.fb(pt: 206, fmt: 15, sender: W.bSender, media: 0, fci: W.remb(2, exponent: 2, mantissa: 250_000) + W.u32(W.outB) + W.u32(W.unknown))
        var summary = RTCPSummary()
        let out = W.translate(input, summary: &summary)
        #expect(summary.remb == 1_000_000)
        #expect(out == W.fb(pt: 206, fmt: 15, sender: W.relayA, media: 0, fci: W.remb(2, exponent: 2, mantissa: 250_000) + W.u32(W.inA) + W.u32(W.unknown)))

        let huge = W.fb(pt: 206, fmt: 15, sender: W.bSender, media: 0, fci: W.remb(0, exponent: 63, mantissa: 0x3FFFF))
        _ = W.translate(huge, summary: &summary)
        #expect(summary.remb == UInt64.max)
    }

    @Test func otherApplicationFeedbackIsNotREMB() {
        let input = W.fb(pt: 206, fmt: 15, sender: W.bSender, media: W.outB, fci: Array("GOOG".utf8) + W.u32(42))
        var summary = RTCPSummary()
        let out = W.translate(input, summary: &summary)
        #expect(summary.remb == nil)
        #expect(out == W.fb(pt: 206, fmt: 15, sender: W.relayA, media: W.inA, fci: Array("GOOG".utf8) + W.u32(42)))
    }

    @Test func transportCCOnlyChangesSSRCs() {
        // Base seq 0x1234, status count 3, reference time + fb count, one run-length chunk, three deltas, pad.
        let fci: [UInt8] = [0x12, 0x34, 0x00, 0x03, 0x01, 0x02, 0x03, 0x07, 0x20, 0x03, 0x04, 0x05, 0x06, 0x00, 0x00, 0x00]
        let input = W.fb(pt: 205, fmt: 15, sender: W.bSender, media: W.outB, fci: fci)
        let out = W.translate(input)
        #expect(out.count == input.count)
        #expect(out[0..<4] == input[0..<4])
        #expect(W.u32(out, at: 4) == W.relayA)
        #expect(W.u32(out, at: 8) == W.inA)
        #expect(out[12...] == input[12...])
        #expect(W.translate(W.fb(pt: 205, fmt: 15, sender: W.bSender, media: W.unknown, fci: fci)).isEmpty)
    }

    @Test func paddingIsStrippedAndOnlyAllowedLast() {
        let pli = W.fb(pt: 206, fmt: 1, sender: W.bSender, media: W.outB, padding: 4)
        #expect(W.wellFormed(W.rr(sender: W.bSender) + pli))
        #expect(W.translate(W.rr(sender: W.bSender) + pli) == W.rr(sender: W.relayA) + W.fb(pt: 206, fmt: 1, sender: W.relayA, media: W.inA))
        var padFirst = W.rr(sender: W.bSender) + W.fb(pt: 206, fmt: 1, sender: W.bSender, media: W.outB)
        padFirst[0] |= 0x20
        #expect(W.translate(padFirst).isEmpty)
        var zeroPad = pli
        zeroPad[zeroPad.count - 1] = 0
        #expect(W.translate(zeroPad).isEmpty)
    }
}

@Suite struct RTCPMalformedTests {
    typealias W = RTCPWire

    static let compound: [UInt8] =
        W.sr(sender: W.bSender, rtp: 1, blocks: [W.block(ssrc: W.outB, highest: 9), W.block(ssrc: W.unknown, highest: 3)])
        + W.fb(pt: 205, fmt: 1, sender: W.bSender, media: W.outB, fci: W.u16(100) + W.u16(0xFFFF))
        + W.fb(pt: 206, fmt: 15, sender: W.bSender, media: 0, fci: W.remb(1, exponent: 3, mantissa: 1000) + W.u32(W.outB))
        + W.sdes(W.bSender)

    @Test func everyPrefixIsHandled() {
        let boundaries: Set<Int> = [76, 92, 116, Self.compound.count]
        var summary = RTCPSummary()
        for length in 0..<Self.compound.count {
            let prefix = Array(Self.compound.prefix(length))
            let out = W.translate(prefix, summary: &summary) { _, seq in seq % 2 == 0 }
            #expect(out.count <= length)
            #expect((out.count > 0) == boundaries.contains(length), "prefix \(length)")
            #expect(W.wellFormed(prefix) == boundaries.contains(length), "prefix \(length)")
        }
    }

    @Test func lengthBeyondTheBufferIsRefused() {
        var bytes = Self.compound
        var summary = RTCPSummary()
        let n = bytes.withUnsafeMutableBytes {
            RTCP.translate($0, length: Self.compound.count + 4, W.map, summary: &summary) { _, _ in false }
        }
        #expect(n == 0)
        #expect(bytes.withUnsafeBytes { RTCP.isWellFormed($0, length: -1) } == false)
    }

    @Test func badFramingIsNotWellFormed() {
        #expect(W.wellFormed(Self.compound))
        #expect(W.wellFormed(W.fb(pt: 206, fmt: 1, sender: 1, media: 2)))
        var badVersion = Self.compound
        badVersion[0] = (badVersion[0] & 0x3F) | 0x40
        #expect(!W.wellFormed(badVersion))
        #expect(W.translate(badVersion).isEmpty)
        var pastEnd = Self.compound
        pastEnd[116 + 3] += 1  // the last sub-packet's length field
        #expect(!W.wellFormed(pastEnd))
        #expect(W.translate(pastEnd).isEmpty)
        #expect(!W.wellFormed(Self.compound + [0, 0, 0, 0]))
        #expect(!W.wellFormed(W.sdes(W.bSender)))
        var tooManyBlocks = W.rr(sender: W.bSender)
        tooManyBlocks[0] |= 1
        #expect(!W.wellFormed(tooManyBlocks))
    }

    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(state: 0x5EED)
        var summary = RTCPSummary()
        for round in 0..<6000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                // Plausible framing with random contents, so the per-type code runs too.
                bytes = []
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    let pt: UInt8 = [200, 201, 202, 203, 205, 205, 206, 206, 207][Int.random(in: 0..<9, using: &rng)]
                    let count = Bool.random(using: &rng) ? Int.random(in: 0...2, using: &rng) : [1, 4, 15][Int.random(in: 0..<3, using: &rng)]
                    var body = (0..<4 * Int.random(in: 0...14, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    if pt == 206, count == 15, body.count >= 12, Bool.random(using: &rng) { body.replaceSubrange(8..<12, with: "REMB".utf8) }
                    if body.count >= 8, Bool.random(using: &rng) { body.replaceSubrange(4..<8, with: W.u32(W.outB)) }
                    bytes += W.packet(count: count, pt: pt, body: body)
                }
                if Int.random(in: 0..<4, using: &rng) == 0, !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                }
            }
            let out = W.translate(bytes, summary: &summary) { _, seq in seq & 1 == 1 }
            #expect(out.count <= bytes.count)
            if !out.isEmpty { #expect(W.wellFormed(out), "round \(round)") }
        }
    }
}
