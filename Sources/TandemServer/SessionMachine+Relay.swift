import Logging
import TandemArbiter
import TandemMedia
import TandemMediaCore
import TandemProtocol

/// The media relay's side of a session: its legs are opened for the session's epoch on provider relay,
/// signals for the server go to them, and what they say comes back as ``SessionInput/relay(_:)``.
extension SessionMachine {
    /// A signal for the server's own media endpoint, for the current epoch.
    mutating func signalRelay(_ from: ParticipantID, _ signal: SignalRequest) {
        guard arbiter.provider == .relay, let relayEpoch, relayEpoch == arbiter.epoch else {
            return sendError(from, ProtocolError(.providerUnavailable, "the server's media endpoint serves only provider relay", ref: "signal"))
        }
        let input: RelayInput
        switch signal.kind {
        case .offer, .answer:
            // The decoder refuses an offer or answer without a string `sdp`.
            let sdp = signal.data["sdp"]?.stringValue ?? ""
            input = signal.kind == .offer ? .offer(sdp: sdp) : .answer(sdp: sdp)
        case .candidate:
            // `candidate` is an RTCIceCandidateInit ({candidate, sdpMid, …}) or the bare attribute string.
            guard let value = signal.data["candidate"]?["candidate"]?.stringValue ?? signal.data["candidate"]?.stringValue else {
                return sendError(from, ProtocolError(.badMessage, "a candidate needs candidate.candidate", ref: "signal"))
            }
            // An empty candidate is the browser's end of candidates.
            input = value.isEmpty ? .endOfCandidates : .candidate(value)
        case .endOfCandidates:
            input = .endOfCandidates
        case .restart:
            // Each relay epoch has fresh legs, so there is no ICE restart to make: the client offers anew.
            return
        }
        out.append(.relay(.signal(from, input)))
    }

    /// Opens the relay when the session is on it, and closes it when the session leaves it or its epoch
    /// (after a grace, make before break: the old legs carry the call until the clients' new paths do).
    mutating func syncRelay() {
        let wanted = !closed && arbiter.provider == .relay && env.hasRelay
        if let open = relayEpoch, !wanted || open != arbiter.epoch {
            relayEpoch = nil
            relayStats = [:]
            out.append(.relay(.close(now: closed)))
        }
        guard wanted, relayEpoch == nil else { return }
        relayEpoch = arbiter.epoch
        out.append(.relay(.open(epoch: arbiter.epoch)))
    }

    mutating func relayOutput(_ output: RelayOutput) {
        let (participant, epoch) = output.leg
        if case let .media(_, _, connected, error) = output {
            out.append(
                .log(
                    .info, "relay leg \(connected ? "connected" : "failed")",
                    ["participant": "\(participant)", "epoch": "\(epoch)", "error": "\(error?.description ?? "-")"]))
        }
        // What a leg says matters only for the session's current epoch and a participant still in it.
        let id = ParticipantID(participant)
        guard epoch == arbiter.epoch, members[id] != nil else { return }
        switch output {
        case .answer(_, _, let sdp):
            sendRelaySignal(id, "answer", epoch: epoch, capacity: sdp.utf8.count + 96) { $0.member("sdp", sdp) }
        case .offer(_, _, let sdp):
            sendRelaySignal(id, "offer", epoch: epoch, capacity: sdp.utf8.count + 96) { $0.member("sdp", sdp) }
        case let .candidate(_, _, candidate, mid, mLineIndex):
            sendRelaySignal(id, "candidate", epoch: epoch, capacity: candidate.utf8.count + 128) { w in
                w.key("candidate")
                w.beginObject()
                w.member("candidate", candidate)
                w.member("sdpMid", mid)
                w.member("sdpMLineIndex", mLineIndex)
                w.endObject()
            }
        case .endOfCandidates:
            sendRelaySignal(id, "end-of-candidates", epoch: epoch)
        case .rejected(_, _, let error):
            sendError(id, ProtocolError(.badMessage, "the relay cannot use this signal: \(error.message) (\(error.code.rawValue))", ref: "signal"))
        case .stats(_, _, let stats):
            relayStats[id] = stats
            guard holdsLease, stats.lossPct != nil || stats.rttMs != nil || stats.jitterMs != nil else { return }
            let measured = HealthReport(
                epoch: epoch, provider: .relay, media: .connected, rttMs: stats.rttMs, lossPct: stats.lossPct, jitterMs: stats.jitterMs)
            perform(arbiter.measured(id, measured, now: now))
        case .media(_, _, let connected, _):
            // A failed leg fails the participant's epoch, as its own `failed` report would.
            guard !connected, holdsLease else { return }
            perform(arbiter.mediaFailed(id, epoch: epoch, provider: .relay, now: now))
        }
    }

    /// A signal from the server's endpoint: `{"kind": …, …, "epoch": …}`.
    private mutating func sendRelaySignal(
        _ id: ParticipantID, _ kind: String, epoch: Int, capacity: Int = 128, _ body: (inout JSONWriter) -> Void = { _ in }
    ) {
        var w = JSONWriter(capacity: capacity)
        w.beginObject()
        w.member("kind", kind)
        body(&w)
        w.member("epoch", epoch)
        w.endObject()
        send(id, .signal(from: .server, rawData: w.bytes))
    }
}
