/// The last packets a leg sent on one stream, kept encrypted: a NACK is answered by sending the very
/// same bytes again (protecting one sequence number twice would reuse the SRTP keystream).
/// Preallocated; storing and looking up never allocate.
final class RetransmissionBuffer {
    let slots: Int
    let slotSize: Int
    private let storage: UnsafeMutableRawBufferPointer
    private var sequences: [Int32]
    private var lengths: [Int]

    init(slots: Int = 256, slotSize: Int = 1500 + SRTPSession.maxTrailer) {
        self.slots = slots
        self.slotSize = slotSize
        storage = .allocate(byteCount: slots * slotSize, alignment: 16)
        sequences = [Int32](repeating: -1, count: slots)
        lengths = [Int](repeating: 0, count: slots)
    }

    deinit { storage.deallocate() }

    func store(seq: UInt16, _ packet: UnsafeRawBufferPointer) {
        guard packet.count <= slotSize else { return }
        let slot = Int(seq) % slots
        UnsafeMutableRawBufferPointer(rebasing: storage[slot * slotSize..<slot * slotSize + packet.count]).copyMemory(from: packet)
        sequences[slot] = Int32(seq)
        lengths[slot] = packet.count
    }

    /// The stored packet for `seq`, valid until the next `store`.
    func packet(seq: UInt16) -> UnsafeRawBufferPointer? {
        let slot = Int(seq) % slots
        guard sequences[slot] == Int32(seq) else { return nil }
        return UnsafeRawBufferPointer(rebasing: storage[slot * slotSize..<slot * slotSize + lengths[slot]])
    }
}
