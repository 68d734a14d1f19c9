import ArgumentParser
import PortcullisRuntime

/// Started by the master only: serves FastCGI on an inherited socket.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker", abstract: "Internal: a worker process (spawned by the master).", shouldDisplay: false)

    @OptionGroup var options: ConfigOption
    @Option(help: "The generation's validated copy of the config file.") var snapshot: String?
    @Option(help: "Inherited listening socket descriptor.") var fd: Int32 = 3
    @Option(help: "Inherited control channel to the master.") var control: Int32?
    @Option var threads: Int?
    @Option var generation: Int = 1
    @Option(help: "The worker's block of the metrics file (assigned by the master).") var metricsBlock: Int?

    func run() throws {
        WorkerProcess.run(configPath: options.config, snapshotPath: snapshot, listenFD: fd, controlFD: control,
                          loops: threads, generation: generation, metricsBlock: metricsBlock)
    }
}
