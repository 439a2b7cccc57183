import TandemMediaCore
import CNice

/// One participant's connection to the relay: its ICE agent, DTLS association, SRTP sessions and the
/// streams the relay sends it. Lives on its session's loop; the packet path allocates nothing.
final class RelayLeg: ICEAgentDelegate, @unchecked Sendable {
    let participant: String
    /// Its session owns the leg and outlives it (a leg is only ever reached through its session, its
    /// agent's callbacks end when it closes, its timers hold it weakly), so no reference counting here:
    /// this is read several times per packet.
    unowned(unsafe) let session: RelaySession
    private var machine: RelayLegMachine
    private var agent: ICEAgent?
    private var dtls: DTLSTransport?
    private var srtpIn: SRTPSession?
    private var srtpOut: SRTPSession?
    private var handshakeTimer: LoopTimer?
    private var reofferTimer: LoopTimer?
    private var retransmitTimer: LoopTimer?

    /// What this leg's client sends, by kind: its payload type and (once seen) SSRC.
    private(set) var media: [NegotiatedMedia] = []
    private(set) var audioIn: (pt: UInt8, ssrc: UInt32?)?
    private(set) var videoIn: (pt: UInt8, ssrc: UInt32?)?
    /// What the relay sends this leg (the peer's media), by kind.
    private(set) var audioOut: OutgoingRTPStream?
    private(set) var videoOut: OutgoingRTPStream?
    /// Encrypted copies of the video sent on this leg, for answering its client's NACKs.
    private var videoHistory: RetransmissionBuffer?
    private let localAudioSSRC = UInt32.random(in: 1...UInt32.max)
    private let localVideoSSRC = UInt32.random(in: 1...UInt32.max)
    /// Host candidates gathered when the agent started: every answer carries them.
    private var hostCandidates: [String] = []
    /// The client's last offer, which the relay's answers and own offers build on.
    private var lastOffer: SessionDescription?
    /// Sections the relay offered and the client has not answered yet.
    private var pendingReoffer: [SDPAddedSection]?
    /// Kinds the relay has offered to add, once each.
    private var offeredKinds: Set<MediaKind> = []
    private var sdpVersion: UInt64 = 1
    private let sessionID = UInt64.random(in: 1...UInt64(Int64.max))

    /// RTCP from this leg's client, translated for the peer: its tables are refilled per packet (a few
    /// entries, capacity kept), so they always follow the streams' current sources and offsets.
    private var translation = RTCPTranslation()
    private var summary = RTCPSummary()
    /// Traffic and the client's view of it, for `RelayOutput.stats`.
    private var figures = RelayLegStats()
    /// Sender reports forwarded to this leg's client (NTP middle 32 bits, when), to time its replies.
    private var forwardedSR: [(lsr: UInt32, atMs: Int64)] = Array(repeating: (0, 0), count: 8)
    private var forwardedSRNext = 0

    /// The leg's figures while it is connected.
    var stats: RelayLegStats? { machine.isConnected ? figures : nil }
    private let scratch: UnsafeMutableRawBufferPointer
    private var closed = false

    static let scratchSize = 1500 + SRTPSession.maxTrailer
    static let reofferTimeoutMs = 10_000

    init(participant: String, session: RelaySession) {
        self.participant = participant
        self.session = session
        counters = session.relay.counters
        machine = RelayLegMachine()
        translation.senders.reserveCapacity(2)
        translation.media.reserveCapacity(2)
        scratch = .allocate(byteCount: Self.scratchSize, alignment: 16)
    }

    deinit {
        // A leg is closed explicitly; this is the safety net that keeps libnice from calling a freed leg.
        agent?.close()
        scratch.deallocate()
    }

    var isAwaitingOffer: Bool { machine.state == .awaitingOffer }

    /// Whether `offer` is a new transport (new ICE credentials or certificate: the client made a new
    /// peer connection), which this leg's ICE agent and DTLS association cannot serve.
    func isNewTransport(_ offer: SessionDescription) -> Bool {
        guard let lastOffer else { return false }
        return offer.iceUfrag != lastOffer.iceUfrag || offer.icePwd != lastOffer.icePwd || offer.fingerprint != lastOffer.fingerprint
    }

    private var relay: MediaRelay { session.relay }
    private let counters: RelayCounters

    /// The bundle's section: the first the relay accepted, and its index among the offer's m-lines.
    private var bundle: (mid: String, index: Int) {
        let mid = media.first?.mid ?? "0"
        return (mid, lastOffer?.media.firstIndex { $0.mid == mid } ?? 0)
    }

    private func localEndpoint(candidates: [String] = []) -> SDPLocalEndpoint {
        SDPLocalEndpoint(
            iceUfrag: agent?.localUfrag ?? "", icePwd: agent?.localPassword ?? "", fingerprint: relay.identity.fingerprint,
            candidates: candidates, cname: "tandem", streamID: "tandem-relay", audioSSRC: localAudioSSRC, videoSSRC: localVideoSSRC,
            sessionID: sessionID, sessionVersion: sdpVersion)
    }

    // MARK: Signals

    func receive(_ input: RelayInput) {
        switch input {
        case .offer:
            break  // parsed and handed to `offer(_:)` by the session
        case .candidate(let value):
            agent?.addRemoteCandidate(value)
        case .endOfCandidates:
            agent?.remoteGatheringDone()
        case .answer(let sdp):
            answered(sdp)
        }
    }

    func offer(_ offer: SessionDescription) {
        // Perfect negotiation: towards the relay the client is polite, so in a glare the relay's own
        // offer stands and the client's is ignored (the client rolls back and answers ours).
        guard pendingReoffer == nil else { return }
        var endOfCandidates = false
        if agent == nil {
            do {
                // The offerer controls ICE, unless it is a lite implementation, which never does.
                let agent = try ICEAgent(
                    loop: session.loop, configuration: relay.configuration.ice, controlling: offer.iceLite, delegate: self)
                self.agent = agent
                // Host candidates come at once: they go in the answer itself, so that clients which do
                // not trickle (aiortc) get them too. Later ones trickle.
                (hostCandidates, endOfCandidates) = try agent.start()
            } catch {
                return perform(machine.handle(.badOffer(error)))
            }
        }
        guard let agent else { return }
        let answer: SDPAnswer
        do {
            answer = try offer.answer(localEndpoint(candidates: hostCandidates))
        } catch {
            return perform(machine.handle(.badOffer(error)))
        }
        if dtls == nil {
            do {
                dtls = try DTLSTransport(identity: relay.identity, role: answer.dtlsRole, remoteFingerprint: offer.fingerprint)
            } catch {
                return perform(machine.handle(.badOffer(error)))
            }
        }
        sdpVersion += 1
        lastOffer = offer
        media = answer.media
        for m in answer.media {
            switch m.kind {
            case .audio: audioIn = (m.codec.payloadType, m.remoteSSRC ?? audioIn?.ssrc)
            case .video: videoIn = (m.codec.payloadType, m.remoteSSRC ?? videoIn?.ssrc)
            }
        }
        _ = agent.setRemoteCredentials(ufrag: offer.iceUfrag, password: offer.icePwd)
        perform(machine.handle(.offer), answer: answer.sdp, endOfCandidates: endOfCandidates)
        for candidate in offer.candidates { agent.addRemoteCandidate(candidate) }
        if offer.endOfCandidates { agent.remoteGatheringDone() }
        session.negotiated(self)
    }

    /// Offers the client a send-only section for each kind `peer` sends that this leg's offer lacked.
    func offerMissingKinds(from peer: RelayLeg) {
        guard pendingReoffer == nil, let lastOffer, !closed else { return }
        let present = Set(media.map(\.kind))
        let missing = MediaKind.allCases.filter { kind in
            peer.media.contains { $0.kind == kind && $0.direction.receives } && !present.contains(kind) && !offeredKinds.contains(kind)
        }
        guard !missing.isEmpty else { return }
        offeredKinds.formUnion(missing)
        let offer = lastOffer.reoffer(negotiated: media, adding: missing, local: localEndpoint())
        sdpVersion += 1
        pendingReoffer = offer.added
        session.sink(.offer(participant: participant, epoch: session.epoch, sdp: offer.sdp))
        // An offer never answered (lost, or refused by the client) must not leave the leg deaf to the
        // client's own offers.
        reofferTimer = session.loop.schedule(afterMs: Self.reofferTimeoutMs) { [weak self] in
            guard let self, self.pendingReoffer != nil else { return }
            self.pendingReoffer = nil
            self.session.sink(
                .rejected(participant: self.participant, epoch: self.session.epoch, MediaError(.badSDP, "the relay's offer was not answered")))
        }
    }

    /// The client's answer to the relay's offer.
    private func answered(_ sdp: String) {
        guard let added = pendingReoffer else { return }
        pendingReoffer = nil
        reofferTimer?.cancel()
        reofferTimer = nil
        do {
            let answer = try SessionDescription.parse(sdp)
            media += answer.accepted(added)
        } catch {
            session.sink(.rejected(participant: participant, epoch: session.epoch, error))
            return
        }
        session.negotiated(self)
        session.peer(of: self)?.requestKeyframe()
    }

    // MARK: Actions

    /// Performs the machine's actions; `answer` is the text `.answer` sends.
    private func perform(_ actions: [RelayLegMachine.Action], answer: String? = nil, endOfCandidates: Bool = false) {
        for action in actions {
            switch action {
            case .answer:
                guard let answer else { continue }
                session.sink(.answer(participant: participant, epoch: session.epoch, sdp: answer))
                if endOfCandidates { session.sink(.endOfCandidates(participant: participant, epoch: session.epoch)) }
            case .reject(let error):
                session.sink(.rejected(participant: participant, epoch: session.epoch, error))
            case .armHandshakeTimer:
                handshakeTimer = session.loop.schedule(afterMs: relay.configuration.handshakeTimeoutMs) { [weak self] in
                    guard let self else { return }
                    self.perform(self.machine.handle(.handshakeTimeout))
                }
            case .cancelHandshakeTimer:
                handshakeTimer?.cancel()
                handshakeTimer = nil
            case .startDTLS:
                if let event = dtls?.start() { dtlsEvent(event) }
                flushDTLS()
            case .requestKeyframe:
                // Media starts both ways once both legs are up, whichever came up first: each sender is
                // asked for a keyframe to start the other side's decoder. This leg's last DTLS flight
                // goes first, or its client could not yet read the request.
                if let peer = session.peer(of: self), peer.machine.isConnected {
                    flushDTLS()
                    peer.requestKeyframe()
                    requestKeyframe()
                }
            case .report(let error):
                if error == nil {
                    counters.add(counters.legsConnected, 1)
                } else {
                    counters.add(counters.legsFailed, 1)
                }
                session.sink(.media(participant: participant, epoch: session.epoch, connected: error == nil, error: error))
            case .teardown:
                teardown()
            }
        }
    }

    func close() {
        perform(machine.handle(.close))
    }

    private func teardown() {
        guard !closed else { return }
        closed = true
        retransmitTimer?.cancel()
        retransmitTimer = nil
        reofferTimer?.cancel()
        reofferTimer = nil
        dtls?.close()
        flushDTLS()
        agent?.close()
        agent = nil
        // srtp_dealloc costs about half a millisecond: let it happen after the packets queued behind us.
        let released = UncheckedSendable((srtpIn, srtpOut, dtls))
        srtpIn = nil
        srtpOut = nil
        dtls = nil
        session.loop.execute { _ = released }
        session.legEnded(self)
    }

    // MARK: ICE

    func ice(gathered candidate: String) {
        let (mid, index) = bundle
        session.sink(.candidate(participant: participant, epoch: session.epoch, candidate: candidate, mid: mid, mLineIndex: index))
    }

    func iceGatheringDone() {
        session.sink(.endOfCandidates(participant: participant, epoch: session.epoch))
    }

    func ice(state: ICEState) {
        perform(machine.handle(state == .connected ? .iceConnected : .iceFailed))
    }

    func ice(received datagram: UnsafeMutableRawBufferPointer) {
        guard datagram.count >= 2 else { return }
        switch PacketClass.of(datagram[0], datagram[1]) {
        case .dtls:
            guard let dtls else { return }
            if let event = dtls.receive(UnsafeRawBufferPointer(datagram)) { dtlsEvent(event) }
            flushDTLS()
        case .rtp:
            forwardRTP(datagram)
        case .rtcp:
            forwardRTCP(datagram)
        case .other:
            break
        }
    }

    // MARK: DTLS

    private func dtlsEvent(_ event: DTLSTransport.Event) {
        switch event {
        case let .connected(local, remote):
            do {
                srtpIn = try SRTPSession(remote, direction: .inbound)
                srtpOut = try SRTPSession(local, direction: .outbound)
                perform(machine.handle(.dtlsConnected))
            } catch {
                perform(machine.handle(.dtlsFailed(error)))
            }
        case .failed(let error):
            perform(machine.handle(.dtlsFailed(error)))
        case .closed:
            perform(machine.handle(.peerClosed))
        }
    }

    /// Sends what DTLS wrote and re-arms its retransmission timer.
    private func flushDTLS() {
        guard let dtls else { return }
        for datagram in dtls.takeOutgoing() {
            datagram.withUnsafeBytes { _ = agent?.send($0.baseAddress!, count: $0.count) }
        }
        retransmitTimer?.cancel()
        retransmitTimer = nil
        if let ms = dtls.timeoutMs, !closed, !machine.isConnected {
            retransmitTimer = session.loop.schedule(afterMs: ms) { [weak self] in
                guard let self, let dtls = self.dtls else { return }
                if let event = dtls.handleTimeout() { self.dtlsEvent(event) }
                self.flushDTLS()
            }
        }
    }

    // MARK: Media

    /// Sets up the streams that carry `peer`'s media to this leg, for each kind both negotiated.
    func configureOutgoing(from peer: RelayLeg) {
        for kind in MediaKind.allCases {
            guard let mine = media.first(where: { $0.kind == kind && $0.direction.sends }),
                let theirs = peer.media.first(where: { $0.kind == kind && $0.direction.receives })
            else { continue }
            let pairs = theirs.extensions.compactMap { ext -> (incoming: UInt8, outgoing: UInt8)? in
                guard let out = mine.extensions.first(where: { $0.uri == ext.uri }) else { return nil }
                return (ext.id, out.id)
            }
            if var existing = kind == .audio ? audioOut : videoOut, existing.ssrc == mine.localSSRC {
                // The same outgoing stream, fed by a new sender or renegotiated: continuity is kept.
                existing.reconfigure(payloadType: mine.codec.payloadType, extensions: pairs)
                if kind == .audio { audioOut = existing } else { videoOut = existing }
                continue
            }
            let stream = OutgoingRTPStream(
                ssrc: mine.localSSRC, payloadType: mine.codec.payloadType, clockRate: UInt32(mine.codec.clockRate), extensions: pairs)
            if kind == .audio {
                audioOut = stream
            } else {
                videoOut = stream
                if videoHistory == nil, mine.codec.feedback.contains("nack") { videoHistory = RetransmissionBuffer() }
            }
        }
    }

    private func forwardRTP(_ datagram: UnsafeMutableRawBufferPointer) {
        counters.add(counters.packetsIn, 1)
        counters.add(counters.bytesIn, datagram.count)
        guard let srtpIn, datagram.count >= 12, datagram.count <= Self.scratchSize - SRTPSession.maxTrailer,
            let peer = session.peer(of: self), peer.machine.isConnected
        else { return drop() }
        scratch.copyMemory(from: UnsafeRawBufferPointer(datagram))
        guard let plain = srtpIn.plainLength(scratch.baseAddress!, length: datagram.count) else { return drop() }
        figures.packetsIn &+= 1
        figures.bytesIn &+= datagram.count
        let pt = scratch[1] & 0x7F
        let ssrc = scratch.u32(8)
        let isAudio: Bool
        if pt == audioIn?.pt {
            isAudio = true
            if audioIn?.ssrc != ssrc { audioIn?.ssrc = ssrc }
        } else if pt == videoIn?.pt {
            isAudio = false
            if videoIn?.ssrc != ssrc { videoIn?.ssrc = ssrc }
        } else {
            return drop()
        }
        peer.send(rtp: scratch, length: plain, audio: isAudio)
    }

    /// Sends a plain RTP packet of the peer's on this leg: rewritten for this leg, protected, sent.
    private func send(rtp packet: UnsafeMutableRawBufferPointer, length: Int, audio: Bool) {
        let now = monotonicMs()
        let ok = audio ? (audioOut?.rewrite(packet, length: length, nowMs: now) ?? false) : (videoOut?.rewrite(packet, length: length, nowMs: now) ?? false)
        guard ok, let srtpOut, let agent, let protected = srtpOut.protectedLength(packet.baseAddress!, length: length) else { return drop() }
        if !audio, let videoHistory { videoHistory.store(seq: packet.u16(2), UnsafeRawBufferPointer(rebasing: packet[0..<protected])) }
        if agent.send(packet.baseAddress!, count: protected) {
            counters.add(counters.packetsOut, 1)
            counters.add(counters.bytesOut, protected)
            figures.packetsOut &+= 1
            figures.bytesOut &+= protected
        } else {
            drop()
        }
    }

    private func forwardRTCP(_ datagram: UnsafeMutableRawBufferPointer) {
        guard let srtpIn, datagram.count >= 8, datagram.count <= Self.scratchSize - SRTPSession.maxTrailer else { return }
        scratch.copyMemory(from: UnsafeRawBufferPointer(datagram))
        guard let plain = srtpIn.plainLength(scratch.baseAddress!, length: datagram.count, rtcp: true) else { return }
        guard let peer = session.peer(of: self), peer.machine.isConnected else { return }
        let now = monotonicMs()
        fillTranslation(peer)
        let length = RTCP.translate(scratch, length: plain, translation, summary: &summary) { ssrc, seq in
            retransmit(ssrc: ssrc, seq: seq)
        }
        if summary.pictureLossRequests + summary.fullIntraRequests > 0 {
            counters.add(counters.keyframeRequests, summary.pictureLossRequests + summary.fullIntraRequests)
        }
        for block in summary.reports { learn(from: block, nowMs: now) }
        guard length > 0 else { return }
        for lsr in summary.forwardedSenderReports { peer.noteForwardedSenderReport(lsr, nowMs: now) }
        peer.send(rtcp: scratch, length: length)
    }

    private func send(rtcp packet: UnsafeMutableRawBufferPointer, length: Int) {
        guard let srtpOut, let agent, let protected = srtpOut.protectedLength(packet.baseAddress!, length: length, rtcp: true) else { return }
        _ = agent.send(packet.baseAddress!, count: protected)
    }

    /// RTCP from this leg goes to `peer`: our client's media SSRCs become the relay's SSRCs on the peer's
    /// leg (its sender reports), and what our client reports about the relay's streams to it is turned
    /// back into the peer's own SSRCs and numbering.
    private func fillTranslation(_ peer: RelayLeg) {
        // Per RTCP packet, so no array literals: the tables keep their capacity.
        func sender(_ ssrc: UInt32?, _ out: OutgoingRTPStream?) {
            guard let ssrc, let out else { return }
            translation.senders.append(SSRCMapping(from: ssrc, to: out.ssrc, seqDelta: out.seqDelta, tsDelta: out.tsDelta))
        }
        func media(_ out: OutgoingRTPStream?) {
            guard let out, let source = out.source else { return }
            translation.media.append(SSRCMapping(from: out.ssrc, to: source, seqDelta: out.seqDelta, tsDelta: out.tsDelta))
        }
        translation.senders.removeAll(keepingCapacity: true)
        translation.media.removeAll(keepingCapacity: true)
        sender(audioIn?.ssrc, peer.audioOut)
        sender(videoIn?.ssrc, peer.videoOut)
        media(audioOut)
        media(videoOut)
    }

    /// A sender report was forwarded to this leg's client: its replies echo `lsr`, which times the round trip.
    private func noteForwardedSenderReport(_ lsr: UInt32, nowMs: Int64) {
        forwardedSR[forwardedSRNext] = (lsr, nowMs)
        forwardedSRNext = (forwardedSRNext + 1) % forwardedSR.count
    }

    /// A receiver report block from this leg's client about a stream the relay sends it.
    private func learn(from block: RTCPReportBlock, nowMs: Int64) {
        let stream = block.ssrc == videoOut?.ssrc ? videoOut : block.ssrc == audioOut?.ssrc ? audioOut : nil
        guard let clock = stream.map({ Double($0.clockRate) }) else { return }
        figures.lossPct = Double(block.fractionLost) * 100 / 256
        figures.jitterMs = Double(block.jitter) * 1000 / clock
        if block.lastSR != 0, let sent = forwardedSR.first(where: { $0.lsr == block.lastSR }) {
            // DLSR is in 1/65536 s.
            let rtt = Double(nowMs - sent.atMs) - Double(block.delaySinceLastSR) * 1000 / 65_536
            if rtt >= 0 { figures.rttMs = rtt }
        }
    }

    /// Answers a NACK from this leg's client with the packet already sent, if it is still kept.
    private func retransmit(ssrc: UInt32, seq: UInt16) -> Bool {
        counters.add(counters.nacks, 1)
        guard ssrc == videoOut?.ssrc, let agent, let packet = videoHistory?.packet(seq: seq) else { return false }
        guard agent.send(packet.baseAddress!, count: packet.count) else { return false }
        counters.add(counters.retransmissions, 1)
        return true
    }

    /// Asks this leg's client for a keyframe of its video (a PLI from the relay's video SSRC).
    func requestKeyframe() {
        guard machine.isConnected, let media = videoIn?.ssrc, let srtpOut, let agent else { return }
        let length = RTCPWriter.pictureLoss(into: scratch, sender: videoOut?.ssrc ?? localVideoSSRC, media: media)
        guard let protected = srtpOut.protectedLength(scratch.baseAddress!, length: length, rtcp: true) else { return }
        _ = agent.send(scratch.baseAddress!, count: protected)
        counters.add(counters.keyframeRequests, 1)
    }

    @inline(__always) private func drop() {
        counters.add(counters.dropped, 1)
    }
}

@inline(__always) func monotonicMs() -> Int64 {
    Int64(g_get_monotonic_time() / 1000)
}
