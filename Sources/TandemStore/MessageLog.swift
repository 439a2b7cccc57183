import TandemProtocol

/// A bounded per-participant log of framed server messages, for resume. Bounded by count and bytes; when
/// older messages fall out, a resume from before them is refused rather than replayed with a gap.
public struct MessageLog: Sendable {
    public static let defaultMaxMessages = 512
    public static let defaultMaxBytes = 1 << 20

    struct Entry: Sendable {
        var seq: Int
        var frame: [UInt8]
    }

    private var entries: [Entry] = []
    private var head = 0
    private var bytes = 0
    /// The highest sequence number ever appended.
    public private(set) var lastSeq = 0
    let maxMessages: Int
    let maxBytes: Int

    public init(maxMessages: Int = defaultMaxMessages, maxBytes: Int = defaultMaxBytes) {
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
    }

    public mutating func append(seq: Int, _ frame: [UInt8]) {
        entries.append(Entry(seq: seq, frame: frame))
        bytes += frame.count
        lastSeq = max(lastSeq, seq)
        while entries.count - head > maxMessages || (bytes > maxBytes && entries.count - head > 1) {
            bytes -= entries[head].frame.count
            entries[head].frame = []
            head += 1
        }
        if head > 64 && head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    /// The frames after `seq`, or nil if any of them has been dropped or `seq` is ahead of the log.
    public func after(_ seq: Int) -> [[UInt8]]? {
        guard seq <= lastSeq else { return nil }
        if seq == lastSeq { return [] }
        guard head < entries.count, entries[head].seq <= seq + 1 else { return nil }
        return entries[head...].lazy.filter { $0.seq > seq }.map(\.frame)
    }
}
