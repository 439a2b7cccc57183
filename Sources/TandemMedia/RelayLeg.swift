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
    private var bundleMid = "0"
    private var bundleIndex = 0
    /// Candidates gathered inside `ICEAgent.start()`, which the first answer carries.
    private var collecting = false
    private var gatheredEarly: [String] = []
    private var gatheringDoneEarly = false
    private var pendingAnswer: String?
    /// The client's last offer, which the relay's own offers build on.
    private var lastOffer: SessionDescription?
    /// Sections the relay offered and the client has not answered yet.
    private var pendingReoffer: [SDPAddedSection]?
    /// Kinds the relay has offered to add, once each.
    private var offeredKinds: Set<MediaKind> = []
    private var answerVersion: UInt64 = 1
    private let sessionID = UInt64.random(in: 1...UInt64(Int64.max))

    /// RTCP from this leg's client, translated for the peer: rebuilt when a stream's offsets change.
    private var translation = RTCPTranslation()
    private var translationKey = (-1, -1, -1, -1, -1)
    private var summary = RTCPSummary()
    /// Traffic and the client's view of it, for `RelayOutput.stats`.
    private var figures = RelayLegStats()
    /// Sender reports forwarded to this leg's client (NTP middle 32 bits, when), to time its replies.
    private var forwardedSR: [(lsr: UInt32, atMs: Int64)] = Array(repeating: (0, 0), count: 8)
    private var forwardedSRNext = 0

    /// The leg's figures while it is connected.
    var stats: RelayLegStats? { machine.isConnected ? figures : nil }
    private let scratch: UnsafeMutableRawBufferPointer
    /// SSRCs this leg's client has sent RTP with (capacity reserved up front).
    private var knownSSRCs: [UInt32] = {
        var list: [UInt32] = []
        list.reserveCapacity(RelayLeg.maxSSRCs)
        return list
    }()
    static let maxSSRCs = 8
    private var closed = false

    static let scratchSize = 1500 + SRTPSession.maxTrailer

    init(participant: String, session: RelaySession) {
        self.participant = participant
        self.session = session
        counters = session.relay.counters
        machine = RelayLegMachine()
        scratch = .allocate(byteCount: Self.scratchSize, alignment: 16)
    }

    deinit {
        // A leg is closed explicitly; this is the safety net that keeps libnice from calling a freed leg.
        agent?.close()
        scratch.deallocate()
    }

    var isAwaitingOffer: Bool { machine.state == .awaitingOffer }

    /// Whether `sdp` offers a new transport (new ICE credentials or certificate: the client made a new
    /// peer connection), which this leg's ICE agent and DTLS association cannot serve.
    func isNewTransport(_ sdp: String) -> Bool {
        guard let lastOffer, let offer = try? SessionDescription.parse(sdp) else { return false }
        return offer.iceUfrag != lastOffer.iceUfrag || offer.icePwd != lastOffer.icePwd || offer.fingerprint != lastOffer.fingerprint
    }

    private var relay: MediaRelay { session.relay }
    private let counters: RelayCounters

    // MARK: Signals

    func receive(_ input: RelayInput) {
        switch input {
        case .offer(let sdp):
            offer(sdp)
        case .candidate(let value):
            if relay.configuration.ice.acceptsRemote(value) { agent?.addRemoteCandidate(value) }
        case .endOfCandidates:
            agent?.remoteGatheringDone()
        case .answer(let sdp):
            answered(sdp)
        case .restart:
            // Each relay epoch has fresh legs, so there is no ICE restart to make: the client offers anew.
            break
        }
    }

    private func offer(_ sdp: String) {
        // Perfect negotiation: towards the relay the client is polite, so in a glare the relay's own
        // offer stands and the client's is ignored (the client rolls back and answers ours).
        guard pendingReoffer == nil else { return }
        let offer: SessionDescription
        do {
            offer = try SessionDescription.parse(sdp)
        } catch {
            return perform(machine.handle(.badOffer(error)))
        }
        if case .awaitingOffer = machine.state {
            do {
                // The offerer controls ICE, unless it is a lite implementation, which never does.
                let agent = try ICEAgent(
                    loop: session.loop, configuration: relay.configuration.ice, controlling: offer.iceLite, delegate: self)
                self.agent = agent
                // Host candidates are gathered at once, inside start(): they go in the answer itself, so
                // that clients which do not trickle (aiortc) get them too. Later ones trickle.
                collecting = true
                defer { collecting = false }
                try agent.start()
            } catch {
                return perform(machine.handle(.badOffer(error as? MediaError ?? MediaError(.unavailable, "\(error)"))))
            }
        }
        guard let agent else { return }
        let answer: SDPAnswer
        do {
            answer = try offer.answer(
                SDPLocalEndpoint(
                    iceUfrag: agent.localUfrag, icePwd: agent.localPassword, fingerprint: relay.identity.fingerprint,
                    candidates: gatheredEarly, cname: "tandem", streamID: "tandem-relay", audioSSRC: localAudioSSRC,
                    videoSSRC: localVideoSSRC, sessionID: sessionID, sessionVersion: answerVersion))
        } catch {
            return perform(machine.handle(.badOffer(error)))
        }
        if dtls == nil {
            do {
                dtls = try DTLSTransport(identity: relay.identity, role: answer.dtlsRole, remoteFingerprint: offer.fingerprint)
            } catch {
                return perform(machine.handle(.badOffer(error as? MediaError ?? MediaError(.dtlsFailed, "\(error)"))))
            }
            machine = RelayLegMachine(dtlsRoleIsClient: answer.dtlsRole == .client)
        }
        answerVersion += 1
        lastOffer = offer
        media = answer.media
        bundleMid = answer.media.first?.mid ?? "0"
        bundleIndex = offer.media.firstIndex { $0.mid == bundleMid } ?? 0
        for m in answer.media {
            switch m.kind {
            case .audio: audioIn = (m.codec.payloadType, m.remoteSSRC ?? audioIn?.ssrc)
            case .video: videoIn = (m.codec.payloadType, m.remoteSSRC ?? videoIn?.ssrc)
            }
        }
        _ = agent.setRemoteCredentials(ufrag: offer.iceUfrag, password: offer.icePwd)
        pendingAnswer = answer.sdp
        perform(machine.handle(.offer))
        for candidate in offer.candidates where relay.configuration.ice.acceptsRemote(candidate) { agent.addRemoteCandidate(candidate) }
        if offer.endOfCandidates { agent.remoteGatheringDone() }
        session.negotiated(self)
    }

    /// Offers the client a send-only section for each kind `peer` sends that this leg cannot receive.
    func offerMissingKinds(from peer: RelayLeg) {
        guard pendingReoffer == nil, let agent, let lastOffer, !closed else { return }
        let receivable = Set(media.filter { $0.direction.sends }.map(\.kind))
        let present = Set(media.map(\.kind))
        let missing = [MediaKind.audio, .video].filter { kind in
            peer.media.contains { $0.kind == kind && ($0.direction == .sendrecv || $0.direction == .recvonly) }
                && !receivable.contains(kind) && !present.contains(kind) && !offeredKinds.contains(kind)
        }
        guard !missing.isEmpty else { return }
        offeredKinds.formUnion(missing)
        let offer = lastOffer.reoffer(
            negotiated: media, adding: missing,
            local: SDPLocalEndpoint(
                iceUfrag: agent.localUfrag, icePwd: agent.localPassword, fingerprint: relay.identity.fingerprint, cname: "tandem",
                streamID: "tandem-relay", audioSSRC: localAudioSSRC, videoSSRC: localVideoSSRC, sessionID: sessionID,
                sessionVersion: answerVersion))
        answerVersion += 1
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

    static let reofferTimeoutMs = 10_000

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

    private func perform(_ actions: [RelayLegMachine.Action]) {
        for action in actions {
            switch action {
            case .answer:
                if let sdp = pendingAnswer {
                    pendingAnswer = nil
                    session.sink(.answer(participant: participant, epoch: session.epoch, sdp: sdp))
                    if gatheringDoneEarly {
                        gatheringDoneEarly = false
                        session.sink(.endOfCandidates(participant: participant, epoch: session.epoch))
                    }
                }
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
            case .installSRTP:
                break  // installed with the keys, in dtlsEvent
            case .requestKeyframe:
                // This leg can now receive: ask the peer's sender for a keyframe to start its decoder.
                session.peer(of: self)?.requestKeyframe()
            case .report(let connected):
                if connected {
                    counters.add(counters.legsConnected, 1)
                } else {
                    counters.add(counters.legsFailed, 1)
                }
                var error: MediaError?
                if case .failed(let e) = machine.state { error = e }
                session.sink(.media(participant: participant, epoch: session.epoch, connected: connected, error: error))
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
        let (inbound, outbound, transport) = (srtpIn, srtpOut, dtls)
        srtpIn = nil
        srtpOut = nil
        dtls = nil
        let release = Released(inbound, outbound, transport)
        session.loop.execute { release.drop() }
        session.legEnded(self)
    }

    // MARK: ICE

    func ice(gathered local: String) {
        let candidate = relay.configuration.ice.advertised(local)
        if collecting { return gatheredEarly.append(candidate) }
        session.sink(
            .candidate(participant: participant, epoch: session.epoch, candidate: candidate, mid: bundleMid, mLineIndex: bundleIndex))
    }

    func iceGatheringDone() {
        if collecting {
            gatheringDoneEarly = true
            return
        }
        session.sink(.endOfCandidates(participant: participant, epoch: session.epoch))
    }

    func ice(state: ICEState) {
        switch state {
        case .connected: perform(machine.handle(.iceConnected))
        case .failed: perform(machine.handle(.iceFailed))
        case .checking: break
        }
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
                perform(machine.handle(.dtlsFailed(error as? MediaError ?? MediaError(.srtpFailed, "\(error)"))))
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
        for kind in [MediaKind.audio, .video] {
            guard let mine = media.first(where: { $0.kind == kind && ($0.direction == .sendrecv || $0.direction == .sendonly) }),
                let theirs = peer.media.first(where: { $0.kind == kind && ($0.direction == .sendrecv || $0.direction == .recvonly) })
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
        if !knownSSRCs.contains(ssrc) {
            // libsrtp keeps a stream per SSRC and walks them per packet: a client cycling SSRCs would slow
            // every session on this loop. A call needs a handful.
            guard knownSSRCs.count < Self.maxSSRCs else {
                srtpIn.removeStream(ssrc: ssrc)
                return drop()
            }
            knownSSRCs.append(ssrc)
        }
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
        noteSenderReports(plain, forwardedTo: peer, nowMs: now)
        refreshTranslation(peer)
        summary.reset()
        let length = RTCP.translate(scratch, length: plain, translation, summary: &summary) { ssrc, seq in
            retransmit(ssrc: ssrc, seq: seq)
        }
        if summary.pictureLossRequests + summary.fullIntraRequests > 0 {
            counters.add(counters.keyframeRequests, summary.pictureLossRequests + summary.fullIntraRequests)
        }
        for block in summary.reports { learn(from: block, nowMs: now) }
        guard length > 0 else { return }
        peer.send(rtcp: scratch, length: length)
    }

    private func send(rtcp packet: UnsafeMutableRawBufferPointer, length: Int) {
        guard let srtpOut, let agent, let protected = srtpOut.protectedLength(packet.baseAddress!, length: length, rtcp: true) else { return }
        _ = agent.send(packet.baseAddress!, count: protected)
    }

    /// RTCP from this leg goes to `peer`: our client's media SSRCs become the relay's SSRCs on the peer's
    /// leg (its sender reports), and what our client reports about the relay's streams to it is turned
    /// back into the peer's own SSRCs and numbering.
    private func refreshTranslation(_ peer: RelayLeg) {
        // The session's generation changes with its legs and negotiations, the streams' with their sources.
        let key = (
            session.generation, peer.audioOut?.generation ?? -1, peer.videoOut?.generation ?? -1, audioOut?.generation ?? -1,
            videoOut?.generation ?? -1
        )
        guard key != translationKey else { return }
        translationKey = key
        var senders: [SSRCMapping] = []
        if let ssrc = audioIn?.ssrc, let out = peer.audioOut { senders.append(SSRCMapping(from: ssrc, to: out.ssrc, seqDelta: out.seqDelta, tsDelta: out.tsDelta)) }
        if let ssrc = videoIn?.ssrc, let out = peer.videoOut { senders.append(SSRCMapping(from: ssrc, to: out.ssrc, seqDelta: out.seqDelta, tsDelta: out.tsDelta)) }
        var mediaMap: [SSRCMapping] = []
        if let out = audioOut, let source = out.source { mediaMap.append(SSRCMapping(from: out.ssrc, to: source, seqDelta: out.seqDelta, tsDelta: out.tsDelta)) }
        if let out = videoOut, let source = out.source { mediaMap.append(SSRCMapping(from: out.ssrc, to: source, seqDelta: out.seqDelta, tsDelta: out.tsDelta)) }
        translation = RTCPTranslation(senders: senders, media: mediaMap)
    }

    /// Sender reports in a compound packet about to be forwarded to `peer`: the peer's client will echo
    /// their NTP middle bits (LSR) in its receiver reports, which times the round trip to it.
    private func noteSenderReports(_ length: Int, forwardedTo peer: RelayLeg, nowMs: Int64) {
        var offset = 0
        while offset + 20 <= length {
            let words = Int(scratch.u16(offset + 2)) + 1
            if scratch[offset + 1] == 200, offset + 16 <= length {
                peer.forwardedSR[peer.forwardedSRNext] = (scratch.u32(offset + 10), nowMs)
                peer.forwardedSRNext = (peer.forwardedSRNext + 1) % peer.forwardedSR.count
            }
            offset += words * 4
        }
    }

    /// A receiver report block from this leg's client about a stream the relay sends it.
    private func learn(from block: RTCPReportBlock, nowMs: Int64) {
        let clock: Double
        if block.ssrc == videoOut?.ssrc {
            clock = Double(videoOut?.clockRate ?? 90_000)
        } else if block.ssrc == audioOut?.ssrc {
            clock = Double(audioOut?.clockRate ?? 48_000)
        } else {
            return
        }
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
        guard let protected = try? srtpOut.protectRTCP(scratch.baseAddress!, length: length) else { return }
        _ = agent.send(scratch.baseAddress!, count: protected)
        counters.add(counters.keyframeRequests, 1)
    }

    @inline(__always) private func drop() {
        counters.add(counters.dropped, 1)
    }
}

/// SRTP sessions and a DTLS transport released on a later loop turn.
private final class Released: @unchecked Sendable {
    private var objects: (SRTPSession?, SRTPSession?, DTLSTransport?)
    init(_ a: SRTPSession?, _ b: SRTPSession?, _ c: DTLSTransport?) { objects = (a, b, c) }
    func drop() { objects = (nil, nil, nil) }
}

@inline(__always) func monotonicMs() -> Int64 {
    Int64(g_get_monotonic_time() / 1000)
}
