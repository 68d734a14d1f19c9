import ArgumentParser

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version of this binary.")

    /// The release this source tree is.
    static let version = "0.1.0"

    func run() {
        print("portcullis \(Self.version)")
    }
}
