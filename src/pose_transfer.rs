//! The `pose_transfer` example's engine: reads a source picture, its pose and one or more
//! target poses, renders the person in each target pose and writes the result, an animated GIF
//! for pose sequences and, on request, pictures of the flows, masks and attention.
//!
//! Everything is checked and computed before the first file is written, and every file is
//! written to a temporary name and renamed, so a failed run leaves nothing half-written.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use burn::tensor::{Device, Tensor};
use clap::{Parser, ValueEnum};
use gfla_model::picture::tensor_to_images;
use gfla_model::skeleton::{JOINT_COLOURS, JOINT_NAMES, draw_skeleton, skeleton_image};
use gfla_model::visualize::{
    AttentionQuery, attention_coverage, attention_picture, flow_picture, mask_picture, panel,
};
use gfla_model::{ModelSpec, NamedPose, Pose, PoseFrame, PoseTransfer};
use image::imageops::{FilterType, resize};
use image::{ImageFormat, RgbImage};

/// The embedded demo: a synthetic person, its pose, a pose sequence and weights trained by the
/// project on its synthetic data set (see the README).
pub mod demo {
    pub const SOURCE: &[u8] = include_bytes!("../assets/demo/source.png");
    pub const SOURCE_POSE: &str = include_str!("../assets/demo/source_pose.json");
    pub const TARGET_POSES: &str = include_str!("../assets/demo/target_poses.csv");
    pub const WEIGHTS: &[u8] = include_bytes!("../assets/demo/generator.safetensors");
}

/// Renders a person in new poses with GFLA.
///
/// With no arguments it runs the embedded demo (a synthetic person, a pose sequence and small
/// weights trained by this project) and writes target/pose_transfer/.
#[derive(Parser, Debug, Clone)]
#[command(name = "pose_transfer", version, about, long_about = None)]
pub struct Args {
    /// Source picture (PNG or JPEG) of the person.
    #[arg(long, requires_all = ["source_pose", "target_pose"])]
    pub source: Option<PathBuf>,
    /// Pose of the source: OpenPose JSON, a JSON list of 18 [x, y], or an official annotation
    /// CSV (the row named like the source picture, or its only row).
    #[arg(long)]
    pub source_pose: Option<PathBuf>,
    /// Target pose files or folders of them; several poses give one frame each and a GIF.
    #[arg(long, num_args = 1..)]
    pub target_pose: Vec<PathBuf>,
    /// Output picture; with several target poses, OUT_{pose}.png per pose and OUT.gif.
    #[arg(long, default_value = "target/pose_transfer/result.png")]
    pub output: PathBuf,
    /// Generator weights: an official checkpoint (latest_net_G.pth) or a native .safetensors.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Network layout and input size of official weights (native files name their own).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Which person of an OpenPose file with several.
    #[arg(long, default_value_t = 0)]
    pub person: usize,
    /// `HEIGHTxWIDTH` of the pictures the target poses were detected on (OpenPose JSON and
    /// point lists); default: the source picture's size. CSV rows use the preset's frame.
    #[arg(long, value_parser = parse_size)]
    pub target_frame: Option<[usize; 2]>,
    /// Resize results back to the source picture's size (default: the network size).
    #[arg(long)]
    pub keep_size: bool,
    /// Also write flows, masks, attention maps, skeletons and panels into this folder.
    #[arg(long)]
    pub visualize: Option<PathBuf>,
    /// Frames per second of the GIF.
    #[arg(long, default_value_t = 4)]
    pub fps: u32,
    /// Target poses rendered per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Convolution products in bfloat16 (`--device cpu` on a CPU with AVX-512 BF16: AMD Zen 4
    /// and later, Intel Sapphire Rapids and later): about 1.4x faster, pictures within a few
    /// levels of 255 of float32's.
    #[arg(long)]
    pub bf16: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Fashion,
    Market,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// Burn's flex CPU backend.
    Cpu,
    /// Burn's ndarray CPU backend (feature `ndarray`).
    Ndarray,
    /// Any GPU through wgpu (feature `wgpu`).
    Wgpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda,
}

fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected HEIGHTxWIDTH, got {s:?}"))?;
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|v| *v > 0);
    match (parse(h), parse(w)) {
        (Some(h), Some(w)) => Ok([h, w]),
        _ => Err(format!(
            "expected HEIGHTxWIDTH with positive numbers, got {s:?}"
        )),
    }
}

impl DeviceKind {
    pub fn device(self) -> Result<Device> {
        let missing = |feature: &str| {
            anyhow!(
                "--device {feature} needs a build with that feature: cargo run --release --features {feature} --example pose_transfer"
            )
        };
        match self {
            Self::Cpu => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            Self::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(feature = "cuda")]
            Self::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(missing(match other {
                Self::Ndarray => "ndarray",
                Self::Wgpu => "wgpu",
                _ => "cuda",
            })),
        }
    }
}

/// What a run wrote, for the caller to print.
#[derive(Debug, Default)]
pub struct Report {
    /// The rendered pictures, one per target pose.
    pub results: Vec<PathBuf>,
    /// The GIF of the panels, for several target poses.
    pub animation: Option<PathBuf>,
    /// The `--visualize` folder and the pictures written there.
    pub visualize: Option<(PathBuf, usize)>,
    /// `name (HxW)` of the model.
    pub model: String,
    pub frames: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.results.first().map(|p| p.display().to_string());
        match (self.results.len(), first) {
            (0, _) | (_, None) => {}
            (1, Some(p)) => writeln!(f, "result:    {p}")?,
            (n, Some(p)) => {
                let last = self.results[n - 1].file_name().unwrap_or_default();
                writeln!(f, "results:   {p} .. {} ({n} pictures)", last.display())?
            }
        }
        if let Some(gif) = &self.animation {
            writeln!(f, "animation: {}", gif.display())?;
        }
        if let Some((dir, n)) = &self.visualize {
            writeln!(
                f,
                "pictures:  {}/ ({n}: panels, skeletons, flows, masks, attention, coverage)",
                dir.display()
            )?;
        }
        Ok(())
    }
}

/// Turns on bfloat16 products ([`gfla_ops::conv::set_bf16_products`]) where they can run.
fn use_bf16(device: DeviceKind) -> Result<()> {
    ensure!(
        device == DeviceKind::Cpu,
        "--bf16 is for --device cpu (the flex backend's convolutions)"
    );
    #[cfg(feature = "flex")]
    {
        ensure!(
            gfla_ops::conv::bf16_supported(),
            "--bf16 needs a CPU with AVX-512 BF16 (AMD Zen 4 or later, Intel Sapphire Rapids or later); this one lacks it"
        );
        gfla_ops::conv::set_bf16_products(true);
        Ok(())
    }
    #[cfg(not(feature = "flex"))]
    Err(anyhow!("--bf16 needs a build with the flex feature"))
}

/// A target pose with the frame its coordinates are in.
struct Target {
    named: NamedPose,
    frame: [usize; 2],
}

/// Reads the poses of one `--target-pose` argument (a file or a folder of `.json`/`.csv`).
fn target_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list the folder", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json") || e.eq_ignore_ascii_case("csv"))
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "{}: no .json or .csv pose files in the folder",
        path.display()
    );
    Ok(files)
}

/// Checks a pose against its frame: some joint present, none outside, with the file named.
fn check_pose(origin: &str, pose: &NamedPose, frame: [usize; 2]) -> Result<()> {
    ensure!(
        pose.pose.present() > 0,
        "{origin}: pose {} has no joint",
        pose.name
    );
    if let Some((j, [x, y])) = pose.pose.outside(frame) {
        bail!(
            "{origin}: joint {j} ({}) of pose {} at ({x}, {y}) lies outside the {}x{} frame{}",
            JOINT_NAMES[j],
            pose.name,
            frame[0],
            frame[1],
            match pose.frame {
                PoseFrame::Picture => " of its picture (set --target-frame HEIGHTxWIDTH?)",
                PoseFrame::Annotation => " of the preset's annotations (wrong --preset?)",
            }
        );
    }
    Ok(())
}

fn read_picture(path: &Path) -> Result<RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("source picture {}", path.display()))?
        .to_rgb8())
}

fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .expect("PNG encoding to memory");
    bytes.into_inner()
}

fn encode_gif(frames: &[RgbImage], fps: u32) -> Result<Vec<u8>> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, DynamicImage, Frame};
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        let delay = Delay::from_numer_denom_ms(1000, fps.max(1));
        for f in frames {
            let rgba = DynamicImage::ImageRgb8(f.clone()).to_rgba8();
            encoder.encode_frame(Frame::from_parts(rgba, 0, 0, delay))?;
        }
    }
    Ok(bytes)
}

/// Writes every file to a temporary sibling and renames it into place.
fn write_all(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    for (path, bytes) in files {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the folder {}", dir.display()))?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} into place", path.display()))?;
    }
    Ok(())
}

/// `out_<name>.<ext>` beside `out`.
fn sibling(out: &Path, name: &str, ext: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "result".into(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}_{name}.{ext}"))
}

/// Enlarges small network pictures so that panels read well (Market is 128 x 64).
fn legible(img: &RgbImage) -> RgbImage {
    let scale = (256 / img.height().max(1)).max(1);
    if scale == 1 {
        img.clone()
    } else {
        resize(
            img,
            img.width() * scale,
            img.height() * scale,
            FilterType::Nearest,
        )
    }
}

/// Runs the example; returns what was written.
pub fn run(args: &Args) -> Result<Report> {
    ensure!(args.batch > 0, "--batch must be at least 1");
    if args.bf16 {
        use_bf16(args.device)?;
    }
    let device = args.device.device()?;
    let demo = args.source.is_none();

    // Inputs: all read and checked before the network is touched.
    let source = match &args.source {
        Some(path) => read_picture(path)?,
        None => image::load_from_memory(demo::SOURCE)
            .context("embedded demo picture")?
            .to_rgb8(),
    };
    let picture_frame = [source.height() as usize, source.width() as usize];
    let (source_pose, source_pose_origin) = match &args.source_pose {
        Some(path) => {
            let poses = Pose::read_file(path, args.person).map_err(|e| anyhow!(e))?;
            let wanted = args
                .source
                .as_ref()
                .and_then(|s| s.file_stem())
                .map(|s| s.to_string_lossy().into_owned());
            let pose = match poses.len() {
                1 => poses.into_iter().next().expect("one pose"),
                n => poses
                    .into_iter()
                    .find(|p| Some(&p.name) == wanted.as_ref())
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: {n} rows and none named like the source picture",
                            path.display()
                        )
                    })?,
            };
            (pose, path.display().to_string())
        }
        None => (
            NamedPose {
                name: "source".into(),
                pose: Pose::from_openpose_json(demo::SOURCE_POSE, 0)?,
                frame: PoseFrame::Picture,
            },
            "the demo pose".to_string(),
        ),
    };

    let model = match &args.weights {
        Some(path) => {
            let preset = args.preset.map(|p| match p {
                Preset::Fashion => ModelSpec::fashion(),
                Preset::Market => ModelSpec::market(),
            });
            // Official files do not name their preset: Market unless told otherwise.
            let is_native = path.extension().is_some_and(|e| e == "safetensors");
            let preset = preset.or_else(|| (!is_native).then(ModelSpec::market));
            PoseTransfer::open(path, preset, &device)?
        }
        None => {
            ensure!(
                args.preset.is_none(),
                "--preset needs --weights: the embedded demo weights are their own model"
            );
            PoseTransfer::from_native_bytes(demo::WEIGHTS.to_vec(), "the demo weights", &device)?
        }
    };

    let source_frame = model.frame_of(source_pose.frame, picture_frame);
    check_pose(&source_pose_origin, &source_pose, source_frame)?;
    let mut targets = Vec::new();
    if demo && args.target_pose.is_empty() {
        for line in demo::TARGET_POSES.lines().skip(1) {
            let (name, pose) = Pose::from_annotation_row(line)?;
            let name = name.trim_end_matches(".png").to_string();
            let named = NamedPose {
                name,
                pose,
                frame: PoseFrame::Annotation,
            };
            targets.push(Target {
                frame: model.frame_of(named.frame, picture_frame),
                named,
            });
        }
    }
    for arg in &args.target_pose {
        for file in target_files(arg)? {
            for named in Pose::read_file(&file, args.person).map_err(|e| anyhow!(e))? {
                let frame = match named.frame {
                    PoseFrame::Picture => args.target_frame.unwrap_or(picture_frame),
                    PoseFrame::Annotation => model.spec.annotation_frame,
                };
                check_pose(&file.display().to_string(), &named, frame)?;
                targets.push(Target { named, frame });
            }
        }
    }
    ensure!(
        !targets.is_empty(),
        "no target pose given (--target-pose FILE)"
    );
    {
        let mut names: Vec<&str> = targets.iter().map(|t| t.named.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!(
                "two target poses are named {}: their outputs would overwrite each other",
                w[0]
            );
        }
    }

    // Render, batch by batch, keeping everything in memory until the end.
    let [h, w] = model.spec.image_size;
    let network_source = tensor_to_images(model.picture(&source))
        .pop()
        .expect("one picture");
    let mut source_marked = network_source.clone();
    draw_skeleton(&mut source_marked, &source_pose.pose, source_frame);
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut panels = Vec::new();
    let several = targets.len() > 1;
    let vis_dir = args.visualize.clone().or_else(|| {
        demo.then(|| {
            args.output
                .parent()
                .unwrap_or(Path::new("."))
                .join("visualize")
        })
    });
    let layers: Vec<usize> = model
        .spec
        .config
        .coarse_to_fine()
        .iter()
        .map(|a| a.layer)
        .collect();
    for chunk in targets.chunks(args.batch) {
        let poses: Vec<(&Pose, [usize; 2])> =
            chunk.iter().map(|t| (&t.named.pose, t.frame)).collect();
        let out = model.render(&source, (&source_pose.pose, source_frame), &poses);
        let results = tensor_to_images(out.image.clone());
        for (i, (target, result)) in chunk.iter().zip(results).enumerate() {
            let name = &target.named.name;
            let saved = if args.keep_size {
                resize(
                    &result,
                    source.width(),
                    source.height(),
                    FilterType::Triangle,
                )
            } else {
                result.clone()
            };
            let path = if several {
                sibling(&args.output, name, "png")
            } else {
                args.output.clone()
            };
            files.push((path, encode_png(&saved)));
            let skeleton = skeleton_image(&target.named.pose, target.frame, h as u32, w as u32);
            let frame_panel = panel(
                &[
                    &legible(&source_marked),
                    &legible(&skeleton),
                    &legible(&result),
                ],
                4,
            );
            if let Some(dir) = &vis_dir {
                files.push((
                    dir.join(format!("panel_{name}.png")),
                    encode_png(&frame_panel),
                ));
                files.push((
                    dir.join(format!("skeleton_{name}.png")),
                    encode_png(&skeleton),
                ));
                let pick = |t: &Tensor<4>| t.clone().narrow(0, i, 1);
                let mut result_marked = result.clone();
                draw_skeleton(&mut result_marked, &target.named.pose, target.frame);
                for (l, layer) in layers.iter().enumerate() {
                    let (Some(flow), Some(mask)) = (out.flows.get(l), out.masks.get(l)) else {
                        continue;
                    };
                    let tag = format!("L{layer}_{name}");
                    files.push((
                        dir.join(format!("flow_{tag}.png")),
                        encode_png(&legible(&flow_picture(pick(flow), h as u32, w as u32))),
                    ));
                    files.push((
                        dir.join(format!("mask_{tag}.png")),
                        encode_png(&legible(&mask_picture(pick(mask), h as u32, w as u32))),
                    ));
                    let Some(weights) = out.attention.get(l).filter(|a| {
                        let kk = a.dims()[1];
                        let k = (kk as f64).sqrt() as usize;
                        k * k == kk && out.attention.len() == out.flows.len()
                    }) else {
                        continue;
                    };
                    let [_, _, fh, fw] = flow.dims();
                    let queries: Vec<AttentionQuery> = target
                        .named
                        .pose
                        .joints
                        .iter()
                        .enumerate()
                        .filter_map(|(j, p)| {
                            let [x, y] = (*p)?;
                            let (gx, gy) = (
                                (x * fw as f64 / target.frame[1] as f64) as usize,
                                (y * fh as f64 / target.frame[0] as f64) as usize,
                            );
                            Some(AttentionQuery {
                                at: (gy.min(fh - 1), gx.min(fw - 1)),
                                colour: JOINT_COLOURS[j],
                            })
                        })
                        .collect();
                    let pic = attention_picture(
                        &network_source,
                        &result_marked,
                        pick(flow),
                        pick(weights),
                        &queries,
                    );
                    files.push((
                        dir.join(format!("attention_{tag}.png")),
                        encode_png(&legible(&pic)),
                    ));
                    let cov =
                        attention_coverage(&network_source, pick(flow), pick(weights), pick(mask));
                    files.push((
                        dir.join(format!("coverage_{tag}.png")),
                        encode_png(&legible(&cov)),
                    ));
                }
            }
            panels.push(frame_panel);
        }
    }
    if several {
        files.push((
            args.output.with_extension("gif"),
            encode_gif(&panels, args.fps)?,
        ));
    }
    write_all(&files)?;
    let in_vis = |p: &Path| vis_dir.as_ref().is_some_and(|d| p.starts_with(d));
    let animation = several.then(|| args.output.with_extension("gif"));
    Ok(Report {
        results: files
            .iter()
            .map(|(p, _)| p.clone())
            .filter(|p| !in_vis(p) && Some(p) != animation.as_ref())
            .collect(),
        visualize: vis_dir
            .clone()
            .map(|d| (d, files.iter().filter(|(p, _)| in_vis(p)).count())),
        animation,
        model: format!(
            "{} ({}x{})",
            model.spec.name, model.spec.image_size[0], model.spec.image_size[1]
        ),
        frames: targets.len(),
    })
}
