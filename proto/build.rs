//! Generates the tonic/prost code for the Mezzanine protocol (`proto/*.proto`,
//! all in package `mezzanine.v1`) with a vendored `protoc`, so building needs
//! no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    // The public API first, then what only masters exchange; one package, so
    // one generated module (`mezz_proto::v1`).
    let files = [
        "proto/common.proto",
        "proto/scheduler.proto",
        "proto/agent.proto",
        "proto/operator.proto",
        "proto/internal.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .btree_map(".")
        .type_attribute(".mezzanine.v1.ClusterState", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.MasterView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.AgentView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.GpuUsageView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.FrameworkView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.TaskView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.RoleView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.SizeView", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.ServiceView", "#[derive(serde::Serialize)]")
        .type_attribute(
            ".mezzanine.v1.ServiceVersionView",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(
            ".mezzanine.v1.ServiceReplicaView",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(
            ".mezzanine.v1.TaskStateChange",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(
            ".mezzanine.v1.PriorityClassView",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(
            ".mezzanine.v1.QueueEntryView",
            "#[derive(serde::Serialize)]",
        )
        // `GET /api/jobs` (docs/api-jobs.md): the records as the operator
        // API answers them, with the proto's field names.
        .type_attribute(".mezzanine.v1.JobRecord", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.JobAttempt", "#[derive(serde::Serialize)]")
        .type_attribute(".mezzanine.v1.JobList", "#[derive(serde::Serialize)]")
        .compile_protos(&files, &["proto"])?;
    // Mesos' own v1 protos, vendored unmodified, for the master's Mesos
    // API: its descriptor set transcodes protobuf calls and events, and the
    // conformance tests decode the API's JSON by Mesos' field names.
    println!("cargo:rerun-if-changed=mesos");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Plain prost (there are no services); Mesos' comments are not
    // rustdoc: their indented examples would run as doctests and their
    // brackets and <tags> break rustdoc.
    let mut mesos = tonic_prost_build::Config::new();
    mesos
        .disable_comments(["."])
        .file_descriptor_set_path(out.join("mesos_descriptor.bin"))
        .compile_protos(
            &[
                "mesos/mesos/v1/mesos.proto",
                "mesos/mesos/v1/scheduler/scheduler.proto",
            ],
            &["mesos"],
        )?;
    Ok(())
}
