"""The ``adalase-tune`` command line. Bad input: one readable line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        print(f"adalase-tune: error: {message} (see adalase-tune {self.prog.split()[-1]} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML, e.g. search_spaces/digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set selection.method=adalase (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adalase-tune", description="Learn where to apply latent data augmentation (AdaLASE).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train one network with one selection policy")
    _add_config_args(t)
    t.add_argument("--out", help="write the summary JSON here")
    t.add_argument("--save-model", metavar="PATH", help="save the trained weights for model.checkpoint (transfer)")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="write DIR/last.pt after every epoch")
    t.add_argument("--resume", action="store_true", help="continue from DIR/last.pt of --checkpoint-dir")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def cmd_train(args) -> int:
    from .checkpoint import atomic_save, safe_load
    from .config import load_config
    from .engine import Trainer
    from .models import save_model

    cfg = load_config(args.config, args.overrides, extra_sections=("sweep",))
    if args.resume and not args.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir DIR (the folder holding last.pt)")
    ckpt = Path(args.checkpoint_dir) / "last.pt" if args.checkpoint_dir else None
    if args.out:
        _check_writable(args.out, "--out")
    if args.save_model:
        _check_writable(args.save_model, "--save-model")
    report = (lambda metrics, state: atomic_save(state, ckpt)) if ckpt else None
    trainer = Trainer(cfg, report=report, progress=not args.quiet)
    if args.resume and ckpt.is_file():
        trainer.load_state_dict(safe_load(ckpt), source=str(ckpt))
        print(f"resuming {ckpt} after epoch {trainer.epoch}", file=sys.stderr)
    if not args.quiet:
        sites = ", ".join(f"{i}:{s.name}{list(s.shape)}" for i, s in enumerate(trainer.sites))
        print(f"{cfg.model.name} on {cfg.data.name} (n_train={len(trainer.data.train)}), "
              f"{cfg.selection.method}, op {cfg.augment.op}, device {trainer.device}; sites {sites}", file=sys.stderr)
    summary = trainer.run()
    if args.save_model:
        save_model(trainer.model, args.save_model, cfg.to_dict())
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    print(f"best val/acc {summary['best_val_acc']:.4f} (epoch {summary['best_epoch']}), "
          f"test/acc there {summary['test_acc_at_best_val']:.4f}, final test/acc {summary['final_test_acc']:.4f}"
          + (f"; q {['%.3f' % v for v in summary['q_final']]}" if summary["q_final"] else ""))
    return 0


def _check_writable(path: str, flag: str) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {parent} does not exist; create it first")


COMMANDS = {"train": cmd_train}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError) as err:
        print(f"adalase-tune: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("adalase-tune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
