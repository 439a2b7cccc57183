import Foundation
import Testing

@testable import TandemServer

@Suite("Browser client and demo page")
struct WebTests {
    @Test func theClientLibraryIsServedAsAModule() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            let r = try await server.fetch("GET", "/tandem.js")
            #expect(r.status == 200)
            #expect(r.headers["content-type"] == "text/javascript; charset=utf-8")
            #expect(r.headers["x-content-type-options"] == "nosniff")
            #expect(r.headers["cache-control"] == "no-cache")
            let text = String(decoding: r.body, as: UTF8.self)
            // The very file in clients/js, byte for byte.
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../clients/js/tandem.js")
            #expect(r.body == (try Data(contentsOf: source)))
            #expect(text.contains("export async function join("))
        }
    }

    @Test func anUnchangedFileIsNotSentAgain() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            let first = try await server.fetch("GET", "/tandem.js")
            let etag = try #require(first.headers["etag"])
            #expect(etag.hasPrefix("\"") && etag.hasSuffix("\""))
            let again = try await server.fetch("GET", "/tandem.js", headers: ["If-None-Match": etag])
            #expect(again.status == 304)
            #expect(again.body.isEmpty)
            let stale = try await server.fetch("GET", "/tandem.js", headers: ["If-None-Match": "\"0\""])
            #expect(stale.status == 200)
            let head = try await server.fetch("HEAD", "/tandem.js")
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == String(first.body.count))
        }
    }

    @Test func theDemoPageLoadsOnlyItsOwnFiles() async throws {
        try await TestServer.with { (server: TestServer) async throws in
            let page = try await server.fetch("GET", "/")
            #expect(page.status == 200)
            #expect(page.headers["content-type"] == "text/html; charset=utf-8")
            let policy = try #require(page.headers["content-security-policy"])
            #expect(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"))
            let html = String(decoding: page.body, as: UTF8.self)
            for asset in ["/demo.js", "/demo.css"] {
                #expect(html.contains("\"\(asset)\""))
                #expect(try await server.fetch("GET", asset).status == 200)
            }
            #expect(try await server.fetch("GET", "/demo.css").headers["content-type"] == "text/css; charset=utf-8")
            #expect(try await server.fetch("GET", "/nothing-here.js").status == 404)
        }
    }

    @Test func noDemoKeepsTheRootForTheApp() async throws {
        try await TestServer.with(TestServer.config { $0.serveDemo = false }) { (server: TestServer) async throws in
            #expect(try await server.fetch("GET", "/").status == 404)
            #expect(try await server.fetch("GET", "/demo.js").status == 404)
            #expect(try await server.fetch("GET", "/tandem.js").status == 200)
        }
    }
}
