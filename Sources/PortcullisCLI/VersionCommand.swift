import ArgumentParser
import PortcullisCore

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version of this binary.")

    /// What `portcullis version` and `portcullis --version` print (the version the metrics
    /// report too, `portcullis_info{version=...}`).
    static let line = "portcullis \(PortcullisVersion.current)"

    func run() {
        print(Self.line)
    }
}
