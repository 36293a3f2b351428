"""How fast `bttf colorize` runs, against the limits set by its own parts.

On one generated clip (a moving, textured, grainy gray film with one cut, h264 in a temp dir),
each mode in its own subprocess so that peak memory (ru_maxrss) is its own
(`pipeline_modes.py`):

  (a) transcode   PyAV decode + encode with the engine's codec settings, no model: the limit
  (b) model       Colorizer.predict + decode on random L at render size, batched
  (c) naive       one frame at a time, no threads: decode -> RGB -> Lab -> model -> Lab -> RGB
                  -> encode (how the older tools work)
  (d) bttf        bttf.colorize_video with temporal stabilization (the default), and without

and prints frames/s, d/a, d/c, d against the serial bound 1/(1/a + 1/b), and peak memory.
Every run is preceded by a short warm-up in the same process (first 16 frames), so one-off
costs (oneDNN kernel choice, lazy imports) are not counted; model loading is.

    python benchmarks/pipeline.py                          # cpu, 360p, default model
    python benchmarks/pipeline.py --size 720p --frames 120 --json
    python benchmarks/pipeline.py --memory                 # (d) peak memory, 100 vs 1000 frames
    python benchmarks/pipeline.py --levers                 # what each design choice is worth
    python benchmarks/pipeline.py --asm-ab 5 --frames 120    # (a): x264 held to AVX2 vs its own pick
    python benchmarks/pipeline.py --preset veryfast --render-size 160   # a faster setting

The other experiments are scripts of their own too (`pipeline_memory.py`, `pipeline_levers.py`,
`pipeline_asm.py`); `pipeline_common.py` holds the clip, `spawn` and the shared options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # (imported from another script)

from pipeline_common import (
    SIZES,  # noqa: F401  (benchmarks/ab.py and older scripts import it from here)
    add_options,
    clip_for,
    make_clip,  # noqa: F401
    run_experiment,
    spawn,
)


def main_bench(args: argparse.Namespace, tmp: Path) -> dict:
    clip = clip_for(args, tmp)
    modes = ["transcode", "model", "naive", "bttf", "bttf-notemporal"]
    res = {m: spawn(m, clip, tmp, args) for m in modes}
    a, b, c = res["transcode"]["fps"], res["model"]["fps"], res["naive"]["fps"]
    bound = 1.0 / (1.0 / a + 1.0 / b)
    ratios = {}
    for m in ("bttf", "bttf-notemporal"):
        d = res[m]["fps"]
        ratios[m] = {
            "d/a": round(d / a, 3),
            "d/c": round(d / c, 3),
            "d/serial_bound": round(d / bound, 3),
        }
    d = res["bttf"]["fps"]
    targets = {}
    if args.device == "cpu":
        targets = {
            "d >= 0.9 x serial bound": d >= 0.9 * bound,
            "d >= 1.3 x c": d >= 1.3 * c,
            "d >= 24 fps": d >= 24.0,
        }
    else:  # the colorizer hidden behind the codec; DeOldify: ~8.8 fps on an RTX 2070
        targets = {"d >= 0.8 x a": d >= 0.8 * a}
    return {
        "size": args.size,
        "frames": args.frames,
        "device": args.device,
        "model": args.model or "default",
        "batch": args.batch,
        "preset": args.preset,
        "render_size": args.render_size or "model's",
        "serial_bound_fps": round(bound, 2),
        "results": res,
        "ratios": ratios,
        "targets": targets,
    }


def print_main(r: dict, cond: dict) -> None:
    res = r["results"]
    print(
        f"bttf pipeline benchmark — {r['size']}, {r['frames']} frames, model {r['model']}, "
        f"device {r['device']}, batch {r['batch']}, x264 {r['preset']}, render size "
        f"{r['render_size']}"
    )
    print(
        f"machine: {cond['cpu']}, {cond['cores']} cores; load avg {cond['load_avg']}; "
        f"other training running: {cond['other_training_running']}"
        + (f"; GPU: {cond['gpu']}" if cond.get("gpu") else "")
    )
    names = {
        "transcode": "(a) transcode only",
        "model": "(b) model alone",
        "naive": "(c) naive per-frame loop",
        "bttf": "(d) bttf colorize (temporal)",
        "bttf-notemporal": "(d) bttf colorize --no-temporal",
    }
    print(f"{'':36}{'fps':>8}{'CPU ms/frame':>14}{'peak MiB':>10}")
    for m, label in names.items():
        print(
            f"{label:36}{res[m]['fps']:>8.1f}{res[m]['cpu_ms_per_frame']:>14.1f}"
            f"{res[m]['peak_mib']:>10.0f}"
        )
    print(f"{'serial bound 1/(1/a+1/b)':36}{r['serial_bound_fps']:>8.1f}")
    for m in ("bttf", "bttf-notemporal"):
        q = r["ratios"][m]
        print(
            f"{names[m]}: d/a {q['d/a']:.2f}, d/c {q['d/c']:.2f}, "
            f"d/serial bound {q['d/serial_bound']:.2f}"
        )
    for m in ("bttf", "bttf-notemporal"):
        s = res[m]
        print(
            f"  {m} stage busy time: decode {s['decode_s']:.2f} s, model {s['model_s']:.2f} s "
            f"(stabilizer {s['stabilize_s']:.2f} s), encode {s['encode_s']:.2f} s, "
            f"wall {s['seconds']:.2f} s"
        )
    for k, ok in r["targets"].items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    parser.add_argument(
        "--memory", action="store_true", help="peak memory of (d) for 100 and 1000 frames"
    )
    parser.add_argument(
        "--levers", action="store_true", help="(d) with one design choice changed at a time"
    )
    parser.add_argument(
        "--asm-ab",
        type=int,
        default=0,
        metavar="N",
        help="(a) only, N times each alternating: the engine's x264 options vs x264-asm-auto",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one mode: pipeline_modes.py
    args, rest = parser.parse_known_args()
    if args.worker:  # (benchmarks/ab.py runs older trees' pipeline.py --worker)
        import pipeline_modes

        sys.argv = [pipeline_modes.__file__, *sys.argv[1:]]
        pipeline_modes.main()
        return
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.asm_ab:
        from pipeline_asm import asm_bench, report

        args.json = True
        run_experiment(args, asm_bench, report)
    elif args.memory:
        from pipeline_memory import memory_bench, report

        run_experiment(args, memory_bench, report)
    elif args.levers:
        from pipeline_levers import levers_bench, report

        run_experiment(args, levers_bench, report)
    else:
        run_experiment(args, main_bench, print_main)


if __name__ == "__main__":
    main()
