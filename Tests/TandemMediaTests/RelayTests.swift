import Testing

@testable import TandemMedia
@testable import TandemMediaCore

/// The relay leg's lifecycle as event → action tables.
@Suite struct RelayLegMachineTests {
    typealias M = RelayLegMachine
    static let bad = MediaError(.badSDP, "no")

    func run(_ machine: inout M, _ steps: [(M.Event, [M.Action])], sourceLocation: SourceLocation = #_sourceLocation) {
        for (event, expected) in steps {
            #expect(machine.handle(event) == expected, "after \(event)", sourceLocation: sourceLocation)
        }
    }

    static let connected: [M.Action] = [.cancelHandshakeTimer, .report(nil), .requestKeyframe]

    @Test func aLegConnects() {
        var m = M()
        run(&m, [
            (.iceConnected, []),
            (.badOffer(Self.bad), [.reject(Self.bad)]),
            (.offer, [.answer, .armHandshakeTimer]),
            // DTLS starts once ICE connects (a server role then waits for the client's first flight).
            (.iceConnected, [.startDTLS]),
            (.iceConnected, []),
            (.dtlsConnected, Self.connected),
            (.offer, [.answer]),
            (.dtlsConnected, []),
            (.close, [.cancelHandshakeTimer, .teardown]),
            (.close, []),
            (.iceFailed, []),
        ])
        #expect(m.state == .closed)
    }

    @Test func failuresReportOnceAndTearDown() {
        func failed(_ code: MediaError.Code, _ message: String) -> [M.Action] {
            [.cancelHandshakeTimer, .report(MediaError(code, message)), .teardown]
        }
        let mismatch = MediaError(.fingerprintMismatch, "x")
        let cases: [(M.Event, [M.Action])] = [
            (.iceFailed, failed(.iceFailed, "ICE to the relay failed")),
            (.handshakeTimeout, failed(.dtlsTimeout, "the relay leg did not connect in time")),
            (.dtlsFailed(mismatch), failed(.fingerprintMismatch, "x")),
        ]
        for (event, expected) in cases {
            var m = M()
            run(&m, [(.offer, [.answer, .armHandshakeTimer]), (event, expected), (event, []), (.iceFailed, []), (.dtlsConnected, []), (.offer, [])])
            guard case .failed = m.state else {
                Issue.record("not failed after \(event)")
                continue
            }
            run(&m, [(.close, [])])
            #expect(m.state == .closed)
        }
        // Consent lost after media flowed is a failure too; a late handshake timer is not.
        var m = M()
        run(&m, [(.offer, [.answer, .armHandshakeTimer]), (.dtlsConnected, Self.connected),
                 (.handshakeTimeout, []), (.iceFailed, failed(.iceFailed, "ICE to the relay failed"))])
    }

    @Test func theParticipantClosingIsNotAFailure() {
        var m = M()
        run(&m, [(.offer, [.answer, .armHandshakeTimer]), (.dtlsConnected, Self.connected),
                 (.peerClosed, [.cancelHandshakeTimer, .teardown]), (.iceFailed, [])])
        #expect(m.state == .closed)
    }

    @Test func aLegThatNeverGetsAnOfferTimesOut() {
        var m = M()
        run(&m, [(.handshakeTimeout, [.cancelHandshakeTimer, .report(MediaError(.dtlsTimeout, "the relay leg did not connect in time")), .teardown])])
    }
}

/// RTP header rewriting for one outgoing stream, as packet-in → packet-out tables.
@Suite struct OutgoingRTPStreamTests {
    static func packet(pt: UInt8, seq: UInt16, ts: UInt32, ssrc: UInt32, marker: Bool = false, extensions: [UInt8] = []) -> [UInt8] {
        var p: [UInt8] = [extensions.isEmpty ? 0x80 : 0x90, (marker ? 0x80 : 0) | pt]
        p += [UInt8(seq >> 8), UInt8(seq & 0xFF)]
        p += withUnsafeBytes(of: ts.bigEndian, Array.init) + withUnsafeBytes(of: ssrc.bigEndian, Array.init)
        if !extensions.isEmpty {
            p += [0xBE, 0xDE, 0, UInt8(extensions.count / 4)] + extensions
        }
        return p + [1, 2, 3, 4]
    }

    static func fields(_ p: [UInt8]) -> (pt: UInt8, marker: Bool, seq: UInt16, ts: UInt32, ssrc: UInt32) {
        (p[1] & 0x7F, p[1] & 0x80 != 0, UInt16(p[2]) << 8 | UInt16(p[3]),
         p[4..<8].reduce(0) { $0 << 8 | UInt32($1) }, p[8..<12].reduce(0) { $0 << 8 | UInt32($1) })
    }

    func rewrite(_ stream: inout OutgoingRTPStream, _ packet: [UInt8], at ms: Int64) -> [UInt8]? {
        var p = packet
        let ok = p.withUnsafeMutableBytes { stream.rewrite($0, length: packet.count, nowMs: ms) }
        return ok ? p : nil
    }

    @Test func ssrcAndPayloadTypeAreTheLegsAndTheMarkerAndPayloadSurvive() throws {
        var s = OutgoingRTPStream(ssrc: 0xAABB_CCDD, payloadType: 96, clockRate: 90_000)
        let out = try #require(rewrite(&s, Self.packet(pt: 97, seq: 1000, ts: 5000, ssrc: 7, marker: true), at: 0))
        let f = Self.fields(out)
        #expect(f.pt == 96 && f.marker && f.ssrc == 0xAABB_CCDD && f.seq == 1000 && f.ts == 5000)
        #expect(out.suffix(4) == [1, 2, 3, 4])
        #expect(s.source == 7 && s.packets == 1)
    }

    @Test func aNewSourceContinuesTheNumbering() throws {
        var s = OutgoingRTPStream(ssrc: 1, payloadType: 96, clockRate: 90_000)
        // The first source, with a reordered packet and a wrap of its sequence numbers.
        let table: [(UInt16, UInt32, UInt32, Int64, UInt16, UInt32)] = [
            // in seq, in ts, in ssrc, at ms → out seq, out ts
            (65534, 1000, 7, 0, 65534, 1000),
            (65535, 4000, 7, 33, 65535, 4000),
            (0, 7000, 7, 66, 0, 7000),
            (65535, 4000, 7, 70, 65535, 4000),  // late duplicate: same numbers, highest unchanged
            // A new source (the participant came back with a new SSRC and numbering) 100 ms later.
            (300, 900_000, 8, 166, 1, 7000 + 9000),
            (301, 903_000, 8, 200, 2, 7000 + 9000 + 3000),
        ]
        for (seq, ts, ssrc, ms, outSeq, outTs) in table {
            let out = try #require(rewrite(&s, Self.packet(pt: 96, seq: seq, ts: ts, ssrc: ssrc), at: ms))
            let f = Self.fields(out)
            #expect(f.seq == outSeq && f.ts == outTs, "in \(seq)/\(ts)/\(ssrc) → \(f.seq)/\(f.ts), expected \(outSeq)/\(outTs)")
            #expect(f.ssrc == 1)
        }
    }

    @Test func aReconfiguredStreamKeepsItsNumberingAndTakesTheNewPayloadType() throws {
        var s = OutgoingRTPStream(ssrc: 1, payloadType: 96, clockRate: 90_000)
        _ = try #require(rewrite(&s, Self.packet(pt: 96, seq: 10, ts: 1000, ssrc: 7), at: 0))
        // A new participant took the other side at the same epoch; its first packet may even reuse the
        // old sender's SSRC with other numbers.
        s.reconfigure(payloadType: 100, extensions: [])
        let f = Self.fields(try #require(rewrite(&s, Self.packet(pt: 120, seq: 5000, ts: 77, ssrc: 7), at: 40)))
        #expect(f.pt == 100 && f.seq == 11 && f.ts == 1000 + 3600 && f.ssrc == 1)
        let g = Self.fields(try #require(rewrite(&s, Self.packet(pt: 120, seq: 5001, ts: 3077, ssrc: 7), at: 73)))
        #expect(g.seq == 12 && g.ts == 1000 + 3600 + 3000)
    }

    @Test func headerExtensionIdsAreMappedToTheLegsOwn() throws {
        // audio level is id 1 on the incoming leg and 5 on this one; abs-send-time (id 3) is not negotiated here.
        var s = OutgoingRTPStream(ssrc: 1, payloadType: 111, clockRate: 48_000, extensions: [(incoming: 1, outgoing: 5)])
        let ext: [UInt8] = [0x10, 0x55, 0x32, 0xAA, 0xBB, 0xCC, 0x00, 0x00]  // id1 len1, id3 len3, padding
        let out = try #require(rewrite(&s, Self.packet(pt: 111, seq: 1, ts: 1, ssrc: 9, extensions: ext), at: 0))
        let rewritten = Array(out[16..<24])
        #expect(rewritten[0] == 0x50 && rewritten[1] == 0x55)
        #expect(rewritten[2] >> 4 != 3 && rewritten[2] >> 4 != 5 && rewritten[2] >> 4 != 0 && rewritten[2] & 0x0F == 2)
        #expect(Array(rewritten[3...]) == [0xAA, 0xBB, 0xCC, 0, 0])
    }

    @Test func shortOrForeignPacketsAreRefused() {
        var s = OutgoingRTPStream(ssrc: 1, payloadType: 96, clockRate: 90_000)
        #expect(rewrite(&s, [0x80, 96, 0, 1], at: 0) == nil)
        var v1 = Self.packet(pt: 96, seq: 1, ts: 1, ssrc: 2)
        v1[0] = 0x40
        #expect(rewrite(&s, v1, at: 0) == nil)
        // An extension header claiming more than the packet holds is left alone, not read past the end.
        var lying = Self.packet(pt: 96, seq: 1, ts: 1, ssrc: 2, extensions: [0x10, 0x55, 0, 0])
        lying[15] = 200
        #expect(rewrite(&s, lying, at: 0) != nil)
    }

    @Test func demultiplexingFollowsRFC7983() {
        #expect(PacketClass.of(22, 254) == .dtls)
        #expect(PacketClass.of(0x80, 96) == .rtp)
        #expect(PacketClass.of(0x80, 0x80 | 96) == .rtp)
        #expect(PacketClass.of(0x81, 200) == .rtcp)
        #expect(PacketClass.of(0x81, 206) == .rtcp)
        #expect(PacketClass.of(0, 1) == .other)
    }
}

@Suite struct RetransmissionBufferTests {
    @Test func keepsTheLastPacketPerSlotAndForgetsOverwrittenOnes() {
        let buffer = RetransmissionBuffer(slots: 4, slotSize: 16)
        for seq in [UInt16(65534), 65535, 0, 1, 2] {
            let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: seq), count: Int(seq % 7) + 1)
            bytes.withUnsafeBytes { buffer.store(seq: seq, $0) }
        }
        // 65534 shared slot 2 with seq 2, which replaced it.
        #expect(buffer.packet(seq: 65534) == nil)
        #expect(buffer.packet(seq: 2).map(Array.init) == [2, 2, 2])
        #expect(buffer.packet(seq: 65535).map(Array.init) == [UInt8](repeating: 255, count: 65535 % 7 + 1))
        #expect(buffer.packet(seq: 0).map(Array.init) == [0])
        #expect(buffer.packet(seq: 5) == nil)
        // Too big to keep: not stored, and the slot's old packet is still whole.
        [UInt8](repeating: 9, count: 17).withUnsafeBytes { buffer.store(seq: 6, $0) }
        #expect(buffer.packet(seq: 6) == nil)
        #expect(buffer.packet(seq: 2).map(Array.init) == [2, 2, 2])
    }
}
