/// One SSRC as seen on the receiving leg and the SSRC it becomes on the forwarding leg, with the offsets of
/// the relay's outgoing stream: outSeq = inSeq &+ seqDelta, outTimestamp = inTimestamp &+ tsDelta.
public struct SSRCMapping: Sendable, Equatable {
    public var from: UInt32
    public var to: UInt32
    public var seqDelta: UInt16
    public var tsDelta: UInt32

    public init(from: UInt32, to: UInt32, seqDelta: UInt16 = 0, tsDelta: UInt32 = 0) {
        self.from = from
        self.to = to
        self.seqDelta = seqDelta
        self.tsDelta = tsDelta
    }
}

/// The SSRC tables for one forwarding direction. Set on the control path; the hot path only reads them,
/// so it never allocates. Tables are tiny (a few streams per leg), so a linear scan beats hashing.
public struct RTCPTranslation: Sendable {
    /// The sending peer's own media SSRCs → the relay's SSRCs on the other leg for that media.
    public var senders: [SSRCMapping]
    /// The relay's outgoing SSRCs on the receiving leg → the original SSRCs on the other leg.
    public var media: [SSRCMapping]

    public init(senders: [SSRCMapping] = [], media: [SSRCMapping] = []) {
        self.senders = senders
        self.media = media
    }

    /// The sender SSRC written when the sender is not in `senders`: the peer on the other leg must see one
    /// of the relay's SSRCs there, never an SSRC from this leg.
    public var fallbackSender: UInt32 { senders.first?.to ?? 1 }
}

/// What one compound packet told the relay. `RTCP.translate` resets it first; keep one per leg and pass it
/// to every call so the report storage is reused.
public struct RTCPSummary: Sendable {
    /// Picture loss indications seen (counted even when the media SSRC was unknown and the PLI dropped).
    public var pictureLossRequests = 0
    /// Full intra requests seen.
    public var fullIntraRequests = 0
    /// Bitrate in bits per second of the last REMB seen.
    public var remb: UInt64?
    /// Every report block seen, as received (SSRC and sequence in this leg's numbering).
    public var reports: [RTCPReportBlock]
    /// The NTP middle 32 bits of each sender report passed on as one: the receiver will echo them as LSR
    /// in its reports, which times the round trip to it.
    public var forwardedSenderReports: [UInt32]

    public init() {
        reports = []
        reports.reserveCapacity(8)
        forwardedSenderReports = []
        forwardedSenderReports.reserveCapacity(4)
    }

    public mutating func reset() {
        pictureLossRequests = 0
        fullIntraRequests = 0
        remb = nil
        reports.removeAll(keepingCapacity: true)
        forwardedSenderReports.removeAll(keepingCapacity: true)
    }
}

/// An RFC 3550 reception report block.
public struct RTCPReportBlock: Sendable, Equatable {
    public var ssrc: UInt32
    public var fractionLost: UInt8
    /// 24-bit signed on the wire.
    public var cumulativeLost: Int32
    /// Extended highest sequence number: cycles in the high 16 bits.
    public var highestSeq: UInt32
    public var jitter: UInt32
    public var lastSR: UInt32
    public var delaySinceLastSR: UInt32

    public init(
        ssrc: UInt32, fractionLost: UInt8, cumulativeLost: Int32, highestSeq: UInt32, jitter: UInt32, lastSR: UInt32,
        delaySinceLastSR: UInt32
    ) {
        self.ssrc = ssrc
        self.fractionLost = fractionLost
        self.cumulativeLost = cumulativeLost
        self.highestSeq = highestSeq
        self.jitter = jitter
        self.lastSR = lastSR
        self.delaySinceLastSR = delaySinceLastSR
    }
}

/// Rewrites decrypted compound RTCP from one leg of the back-to-back relay for the other leg.
public enum RTCP {
    static let senderReport: UInt8 = 200
    static let receiverReport: UInt8 = 201
    static let transportFeedback: UInt8 = 205
    static let payloadFeedback: UInt8 = 206
    static let reportBlockSize = 24
    /// "REMB" in ASCII.
    static let rembIdentifier: UInt32 = 0x5245_4D42

    /// Translates the compound packet in `packet[0..<length]` in place for the other leg and returns its new
    /// length (0 = nothing to forward, including any malformed input). Resets `summary` and fills it with
    /// what the packet said. `nack` is called for every NACKed sequence number (this leg's numbering) with
    /// the media SSRC as received; returning true means the relay re-sent that packet itself, so it is
    /// taken out of the forwarded NACK. Only SR, RR and feedback sub-packets are forwarded; padding is
    /// stripped (SRTCP re-protection needs none).
    public static func translate(
        _ packet: UnsafeMutableRawBufferPointer, length: Int, _ map: RTCPTranslation, summary: inout RTCPSummary,
        nack: (UInt32, UInt16) -> Bool
    ) -> Int {
        summary.reset()
        // Checked up front so a malformed tail cannot leave half-counted stats behind.
        guard length >= 4, length <= packet.count, framingIsValid(UnsafeRawBufferPointer(packet), length: length) else {
            return 0
        }
        var read = 0
        var write = 0
        while read < length {
            guard let sub = subPacket(UnsafeRawBufferPointer(packet), at: read, length: length) else { return 0 }
            if write != read { move(packet, from: read, to: write, count: sub.content) }
            packet[write] &= ~0x20
            let kept: Int
            switch packet[write + 1] {
            case senderReport:
                kept = translateSR(packet, at: write, content: sub.content, first: write == 0, map, &summary)
            case receiverReport:
                kept = translateRR(packet, at: write, content: sub.content, first: write == 0, map, &summary)
            case transportFeedback:
                kept = translateRTPFB(packet, at: write, content: sub.content, map, nack)
            case payloadFeedback:
                kept = translatePSFB(packet, at: write, content: sub.content, map, &summary)
            default:
                // SDES/BYE/APP/XR describe this leg's peer and SSRCs; the relay speaks for itself on the other leg.
                kept = 0
            }
            if kept > 0 {
                packet.put(UInt16(kept / 4 - 1), at: write + 2)
                write += kept
            }
            read += sub.size
        }
        return write
    }

    /// Checks the RTCP framing of `packet[0..<length]` without changing it: version 2, sub-packet lengths
    /// that add up exactly, padding only on the last sub-packet, the fixed parts of SR/RR/feedback packets
    /// within their lengths, and a first sub-packet that is SR/RR or feedback (reduced-size RTCP).
    public static func isWellFormed(_ packet: UnsafeRawBufferPointer, length: Int) -> Bool {
        guard length >= 4, length <= packet.count else { return false }
        switch packet[1] {
        case senderReport, receiverReport, transportFeedback, payloadFeedback: break
        default: return false
        }
        return framingIsValid(packet, length: length)
    }

    // MARK: Framing

    static func framingIsValid(_ p: UnsafeRawBufferPointer, length: Int) -> Bool {
        var at = 0
        while at < length {
            guard let sub = subPacket(p, at: at, length: length), fixedPartFits(p, at: at, content: sub.content) else {
                return false
            }
            at += sub.size
        }
        return at == length
    }

    /// `size` is what the length field covers; `content` leaves out the padding.
    static func subPacket(_ p: UnsafeRawBufferPointer, at o: Int, length: Int) -> (size: Int, content: Int)? {
        guard o >= 0, length - o >= 4 else { return nil }
        let first = p[o]
        guard first >> 6 == 2 else { return nil }
        let size = (Int(p.u16(o + 2)) + 1) * 4
        guard size <= length - o else { return nil }
        guard first & 0x20 != 0 else { return (size, size) }
        // RFC 3550 6.4.1: only the last packet is padded, by a multiple of four that counts itself.
        let padding = Int(p[o + size - 1])
        guard o + size == length, padding > 0, padding % 4 == 0, padding <= size - 4 else { return nil }
        return (size, size - padding)
    }

    static func fixedPartFits(_ p: UnsafeRawBufferPointer, at o: Int, content n: Int) -> Bool {
        let count = Int(p[o] & 0x1F)
        switch p[o + 1] {
        case senderReport:
            return n >= 28 + reportBlockSize * count
        case receiverReport:
            return n >= 8 + reportBlockSize * count
        case transportFeedback:
            return n >= 12
        case payloadFeedback:
            guard n >= 12 else { return false }
            if count == 4 { return (n - 12) % 8 == 0 }
            if count == 15, n >= 16, p.u32(o + 12) == rembIdentifier {
                return n >= 20 && n >= 20 + 4 * Int(p[o + 16])
            }
            return true
        default:
            return true
        }
    }

    // MARK: Sub-packets (each returns its new content length, 0 = remove)

    static func translateSR(
        _ p: UnsafeMutableRawBufferPointer, at o: Int, content: Int, first: Bool, _ map: RTCPTranslation, _ summary: inout RTCPSummary
    ) -> Int {
        guard let m = translateSender(p, at: o + 4, map) else {
            // A sender the other leg has no stream for: its NTP/RTP pair would be read as the timing of
            // another stream of the relay's. Keep its report blocks as a receiver report.
            remove(p, at: o + 8, count: 20, end: o + content)
            p[o + 1] = receiverReport
            return translateRR(p, at: o, content: content - 20, first: first, map, &summary)
        }
        p.put(p.u32(o + 16) &+ m.tsDelta, at: o + 16)
        summary.forwardedSenderReports.append(p.u32(o + 10))
        var n = content
        translateReportBlocks(p, packet: o, blocks: o + 28, content: &n, map, &summary)
        return n
    }

    static func translateRR(
        _ p: UnsafeMutableRawBufferPointer, at o: Int, content: Int, first: Bool, _ map: RTCPTranslation,
        _ summary: inout RTCPSummary
    ) -> Int {
        translateSender(p, at: o + 4, map)
        var n = content
        let kept = translateReportBlocks(p, packet: o, blocks: o + 8, content: &n, map, &summary)
        // An empty RR is only worth its bytes as the mandatory head of a compound packet.
        return kept > 0 || first ? n : 0
    }

    /// Records every block, then keeps only those about streams the other leg knows.
    @discardableResult
    static func translateReportBlocks(
        _ p: UnsafeMutableRawBufferPointer, packet o: Int, blocks start: Int, content n: inout Int, _ map: RTCPTranslation,
        _ summary: inout RTCPSummary
    ) -> Int {
        let count = Int(p[o] & 0x1F)
        var at = start
        var kept = 0
        for _ in 0..<count {
            let ssrc = p.u32(at)
            let loss = p.u32(at + 4)
            let highest = p.u32(at + 8)
            summary.reports.append(
                RTCPReportBlock(
                    ssrc: ssrc, fractionLost: UInt8(loss >> 24), cumulativeLost: Int32(bitPattern: loss << 8) >> 8,
                    highestSeq: highest, jitter: p.u32(at + 12), lastSR: p.u32(at + 16),
                    delaySinceLastSR: p.u32(at + 20)))
            if let m = find(ssrc, in: map.media) {
                p.put(m.to, at: at)
                p.put(unshift(highest, by: m.seqDelta), at: at + 8)
                at += reportBlockSize
                kept += 1
            } else {
                remove(p, at: at, count: reportBlockSize, end: o + n)
                n -= reportBlockSize
            }
        }
        p[o] = (p[o] & 0xE0) | UInt8(kept)
        return kept
    }

    /// Extended highest sequence number back in the original numbering. Cycles stay at 0 rather than wrap
    /// to 0xFFFF: the original stream cannot have started before its own first cycle.
    static func unshift(_ extended: UInt32, by delta: UInt16) -> UInt32 {
        extended >= UInt32(delta) ? extended - UInt32(delta) : UInt32(UInt16(truncatingIfNeeded: extended) &- delta)
    }

    static func translateRTPFB(
        _ p: UnsafeMutableRawBufferPointer, at o: Int, content: Int, _ map: RTCPTranslation,
        _ nack: (UInt32, UInt16) -> Bool
    ) -> Int {
        translateSender(p, at: o + 4, map)
        let asSent = p.u32(o + 8)
        let media = find(asSent, in: map.media)
        var n = content
        if p[o] & 0x1F == 1 {
            // Ask the relay even for unknown SSRCs: it may still hold the packet it sent on this leg.
            translateNACKs(p, at: o, content: &n, mediaSSRC: asSent, seqDelta: media?.seqDelta ?? 0, nack)
            guard n > 12 else { return 0 }
        }
        // Transport-cc sequence numbers are transport-wide, so like other FMTs only the SSRCs change.
        guard let media else { return 0 }
        p.put(media.to, at: o + 8)
        return n
    }

    static func translateNACKs(
        _ p: UnsafeMutableRawBufferPointer, at o: Int, content n: inout Int, mediaSSRC: UInt32, seqDelta: UInt16,
        _ nack: (UInt32, UInt16) -> Bool
    ) {
        var at = o + 12
        while at < o + n {
            var pid = p.u16(at)
            var blp = p.u16(at + 2)
            let pidAnswered = nack(mediaSSRC, pid)
            var pending = blp
            while pending != 0 {
                let bit = pending.trailingZeroBitCount
                pending &= pending - 1
                if nack(mediaSSRC, pid &+ UInt16(bit + 1)) { blp &= ~(UInt16(1) << UInt16(bit)) }
            }
            if pidAnswered {
                if blp == 0 {
                    remove(p, at: at, count: 4, end: o + n)
                    n -= 4
                    continue
                }
                // The FCI must name a lost packet as its PID, so re-base on the lowest one still missing.
                let shift = blp.trailingZeroBitCount + 1
                pid &+= UInt16(shift)
                blp >>= UInt16(shift)
            }
            p.put(pid &- seqDelta, at: at)
            p.put(blp, at: at + 2)
            at += 4
        }
    }

    static func translatePSFB(
        _ p: UnsafeMutableRawBufferPointer, at o: Int, content: Int, _ map: RTCPTranslation, _ summary: inout RTCPSummary
    ) -> Int {
        translateSender(p, at: o + 4, map)
        let media = find(p.u32(o + 8), in: map.media)
        switch p[o] & 0x1F {
        case 4:
            // RFC 5104 FIR: the media SSRC field is unused (0); the targets are in the FCI entries.
            summary.fullIntraRequests += 1
            var n = content
            var at = o + 12
            while at < o + n {
                if let m = find(p.u32(at), in: map.media) {
                    p.put(m.to, at: at)
                    at += 8
                } else {
                    remove(p, at: at, count: 8, end: o + n)
                    n -= 8
                }
            }
            return n > 12 ? n : 0
        case 15 where content >= 16 && p.u32(o + 12) == rembIdentifier:
            let word = p.u32(o + 16)
            let exponent = Int((word >> 18) & 0x3F)
            let mantissa = UInt64(word & 0x3FFFF)
            summary.remb = mantissa.leadingZeroBitCount >= exponent ? mantissa << UInt64(exponent) : .max
            for k in 0..<Int(word >> 24) {
                let at = o + 20 + 4 * k
                if let m = find(p.u32(at), in: map.media) { p.put(m.to, at: at) }
            }
            // REMB's media SSRC is 0 and its SSRC list is advisory: forward it whatever it names.
            if let media { p.put(media.to, at: o + 8) }
            return content
        default:
            if p[o] & 0x1F == 1 { summary.pictureLossRequests += 1 }
            guard let media else { return 0 }
            p.put(media.to, at: o + 8)
            return content
        }
    }

    /// Rewrites a sender SSRC field; returns the mapping used, nil when the fallback was written.
    @discardableResult
    static func translateSender(_ p: UnsafeMutableRawBufferPointer, at o: Int, _ map: RTCPTranslation) -> SSRCMapping? {
        let m = find(p.u32(o), in: map.senders)
        p.put(m?.to ?? map.fallbackSender, at: o)
        return m
    }

    // MARK: Bytes

    @inline(__always)
    static func find(_ ssrc: UInt32, in table: [SSRCMapping]) -> SSRCMapping? {
        var i = 0
        while i < table.count {
            if table[i].from == ssrc { return table[i] }
            i += 1
        }
        return nil
    }

    /// Overlapping ranges are fine: `copyMemory(from:byteCount:)` is a memmove.
    @inline(__always)
    static func move(_ p: UnsafeMutableRawBufferPointer, from source: Int, to destination: Int, count: Int) {
        guard count > 0, let base = p.baseAddress else { return }
        (base + destination).copyMemory(from: base + source, byteCount: count)
    }

    /// Closes the gap `[at, at+count)` inside a sub-packet that ends at `end`.
    @inline(__always)
    static func remove(_ p: UnsafeMutableRawBufferPointer, at: Int, count: Int, end: Int) {
        move(p, from: at + count, to: at, count: end - at - count)
    }
}
