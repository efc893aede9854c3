//! Method names on the command line → boxed [`Method`]s with a stream's settings.

use firmware::budget::BoardProfile;
use firmware::fisher::FisherFormat;
use firmware::merge::magmax::MAGMAX_LAMBDA;
use firmware::method::class_il::ClassIl;
use firmware::method::{
    AdamNscl, Became, Ewc, FineTune, GpmMethod, Holistic, InputStats, Joint, MergeRule, Merging, Method, NsclConfig,
    PAM_EPSILON, Prototype, Trm,
};

use crate::error::{Error, Result};
use crate::runs::presets::Preset;

/// Names `simulate --method` accepts.
pub const METHODS: &[&str] = &[
    "finetune",
    "ewc",
    "gpm",
    "gpm+became",
    "joint",
    "avg",
    "coma",
    "cofima",
    "imm-mean",
    "imm-mode",
    "magmax",
    "pam",
    "trm",
    "holistic",
    "adam-nscl",
    "adam-nscl+became",
    "ncm",
    "slda",
    "slda-oas",
    "slda-oas+input",
    "randumb2048",
    "field",
];

/// What `--method field` runs: the class-incremental configuration the device uses by default
/// ([`firmware::method::field_method`], the same for the daemon and `host device-learn`).
pub const FIELD: &str = firmware::method::FIELD_METHOD;

/// CoMA's and CoFiMA's default weight on the new task model (`coma:<a>`, `cofima:<a>` choose another): the
/// papers leave it to tuning; 0.5 weighs old and new knowledge equally, the same for every stream.
pub const MERGE_WEIGHT: f64 = 0.5;

fn weight(name: &str, value: &str) -> Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| Error::UnknownMethod(format!("{name}: weight {value:?} is not a number")))
}

/// GPM + BECAME with the preset's settings, storing `F_old` in `format` between tasks.
pub fn became(preset: &Preset, format: FisherFormat) -> Became {
    let gpm = preset.gpm_config();
    Became::new(preset.train.clone(), gpm).with_fisher_format(format)
}

/// Adam-NSCL with the preset's schedule (its own Adam learning rates, `firmware::method::NsclConfig::new`); heads
/// are projected only in single-head runs.
pub fn adam_nscl(preset: &Preset) -> AdamNscl {
    AdamNscl::new(NsclConfig::new(preset.train.clone(), !preset.multi_head))
}

/// Whether `name` runs only on single-head (class-incremental) streams: `field` is the device's configuration,
/// which projects its one head by construction. `host compare` leaves such a method out of task-incremental
/// streams (and says so in its report) instead of failing after the other runs.
pub fn class_incremental_only(name: &str) -> bool {
    name == "field"
}

/// Build the method called `name` with the preset's settings, as board `profile` runs it: every BECAME variant
/// stores `F_old` in the profile's `fisher_format` (unless the name gives one, `gpm+became:q4`), and `field` is
/// [`firmware::method::field_method`] with the profile's format and `fisher` budget, exactly as the daemon builds
/// it. Heads are projected by GPM only when the run is single-head. `gpm+became:<format>` (e.g. `gpm+became:q4`) stores BECAME's accumulated Fisher in a
/// compact format (`firmware::fisher::FisherFormat`).
pub fn build(name: &str, preset: &Preset, profile: &BoardProfile) -> Result<Box<dyn Method>> {
    let format = profile.fisher_format;
    if name == "field" {
        return Ok(Box::new(firmware::method::field_method(preset.train.clone(), format, profile.budget.fisher)?));
    }
    // Class-incremental variants: `gpm+<opts>` and `gpm+became+<opts>` (firmware::method::class_il).
    for (base, is_became) in [("gpm+became+", true), ("gpm+", false)] {
        if let Some(rest) = name.strip_prefix(base)
            && !rest.is_empty()
            && !rest.starts_with("became")
        {
            let (ci, lt) = ClassIl::parse_tokens(rest.split('+'))?;
            if ci.first_session {
                // BECAME's two stages have no first-session form; `fsa+<opts>` is GPM's training on task 1.
                return Err(Error::UnknownMethod(format!("{name}: first-session adaptation is fsa+<options>")));
            }
            let gpm = preset.gpm_config();
            return Ok(if is_became {
                Box::new(became(preset, format).with_class_il(ci, lt))
            } else {
                Box::new(GpmMethod::new(preset.train.clone(), gpm).with_class_il(ci, lt))
            });
        }
    }
    // First-session adaptation (Panos et al., ICCV 2023): `fsa+<opts>`, GPM's training on the first task only,
    // then the trunk frozen (e.g. `fsa+slda+oas+rp2048`).
    if let Some(rest) = name.strip_prefix("fsa+") {
        let (ci, lt) = ClassIl::parse_tokens(std::iter::once("fsa").chain(rest.split('+')))?;
        let gpm = preset.gpm_config();
        return Ok(Box::new(GpmMethod::new(preset.train.clone(), gpm).with_class_il(ci, lt)));
    }
    // RanDumb (Prabhu et al. 2024): `randumb<D>`, standardised by one mean and std over every pixel of the first
    // task, as a board can; `+pixel` per pixel; `+all` from every task's training samples (host only,
    // [`build_for_stream`]).
    if let Some(rest) = name.strip_prefix("randumb") {
        let (width, stats) = randumb_spec(name, rest)?;
        return Ok(Box::new(Prototype::randumb(width, stats).map_err(|e| Error::UnknownMethod(e.to_string()))?));
    }
    if let Some(format) = name.strip_prefix("adam-nscl+became:") {
        let format = format.parse::<FisherFormat>()?;
        return Ok(Box::new(
            Became::with_adam_nscl(adam_nscl(preset), preset.train.clone()).with_fisher_format(format),
        ));
    }
    if let Some(format) = name.strip_prefix("gpm+became:") {
        let format = format.parse::<FisherFormat>()?;
        return Ok(Box::new(became(preset, format)));
    }
    let gpm = preset.gpm_config();
    let train = preset.train.clone();
    let merging = |rule| -> Result<Box<dyn Method>> { Ok(Box::new(Merging::new(preset.train.clone(), rule))) };
    if let Some((family, value)) = name.split_once(':') {
        let v = weight(name, value)?;
        return match family {
            "coma" => merging(MergeRule::Coma { a: v }),
            "cofima" => merging(MergeRule::Cofima { a: v }),
            "magmax" => merging(MergeRule::MagMax { lambda: v }),
            "trm" => Ok(Box::new(
                Trm::new(preset.train.clone()).with_beta(v as f32).map_err(|e| Error::UnknownMethod(e.to_string()))?,
            )),
            "holistic" => Ok(Box::new(
                Holistic::new(preset.train.clone())
                    .with_lr(v as f32)
                    .map_err(|e| Error::UnknownMethod(e.to_string()))?,
            )),
            _ => Err(Error::UnknownMethod(format!(
                "{name} (known with a weight: coma:<a>, cofima:<a>, magmax:<λ>, trm:<β ≥ 0>, holistic:<Adam lr > 0>)"
            ))),
        };
    }
    Ok(match name {
        "avg" => return merging(MergeRule::Average),
        "coma" => return merging(MergeRule::Coma { a: MERGE_WEIGHT }),
        "cofima" => return merging(MergeRule::Cofima { a: MERGE_WEIGHT }),
        "imm-mean" => return merging(MergeRule::ImmMean),
        "imm-mode" => return merging(MergeRule::ImmMode),
        "magmax" => return merging(MergeRule::MagMax { lambda: MAGMAX_LAMBDA }),
        "pam" => return merging(MergeRule::PerturbMerge { eps: PAM_EPSILON }),
        "finetune" => Box::new(FineTune::new(train)),
        "ewc" => Box::new(Ewc::new(train, preset.ewc_lambda)),
        "gpm" => Box::new(GpmMethod::new(train, gpm)),
        "gpm+became" | "became" => Box::new(became(preset, format)),
        "joint" => Box::new(Joint::new(train)),
        "trm" => Box::new(Trm::new(train)),
        "holistic" => Box::new(Holistic::new(train)),
        "adam-nscl" => Box::new(adam_nscl(preset)),
        "adam-nscl+became" => Box::new(Became::with_adam_nscl(adam_nscl(preset), train).with_fisher_format(format)),
        "ncm" => Box::new(Prototype::ncm()),
        "slda" => Box::new(Prototype::slda()),
        "slda-oas" => Box::new(Prototype::slda().with_oas()),
        // The head over the model's input (a cut model: the frozen prefix's features), no trunk.
        "ncm+input" => Box::new(Prototype::ncm().over_input()),
        "slda+input" => Box::new(Prototype::slda().over_input()),
        "slda-oas+input" => Box::new(Prototype::slda().with_oas().over_input()),
        // RanPAC without training: the prototype head over a random expansion of the (untrained) trunk.
        rp if rp.starts_with("ncm+rp") || rp.starts_with("slda+rp") || rp.starts_with("slda-oas+rp") => {
            let (rule, width) = rp.split_once('+').unwrap_or((rp, ""));
            let m = firmware::method::parse_random_features(width).map_err(|e| Error::UnknownMethod(e.to_string()))?;
            let base = match rule {
                "ncm" => Prototype::ncm(),
                "slda" => Prototype::slda(),
                _ => Prototype::slda().with_oas(),
            };
            Box::new(base.with_random_features(m).map_err(|e| Error::UnknownMethod(e.to_string()))?)
        }
        other => return Err(Error::UnknownMethod(format!("{other} (known: {})", METHODS.join(", ")))),
    })
}

/// `randumb<D>[+pixel][+all]` (after `randumb`: `rest`) → `D` and where the statistics come from; with `+all`
/// placeholder statistics (empty: a name check), which [`build_for_stream`] replaces with the stream's.
fn randumb_spec(name: &str, rest: &str) -> Result<(u32, InputStats)> {
    let mut parts = rest.split('+');
    let width = parts.next().unwrap_or_default();
    let (mut per_feature, mut all) = (false, false);
    for opt in parts {
        match opt {
            "pixel" if !per_feature && !all => per_feature = true,
            "all" if !all => all = true,
            _ => return Err(Error::UnknownMethod(format!("{name} (randumb<D>[+pixel][+all])"))),
        }
    }
    let d = firmware::method::parse_random_features(&format!("rp{width}"))
        .map_err(|e| Error::UnknownMethod(format!("{name}: {e}")))?;
    let stats = if all {
        InputStats::Given { mean: Vec::new(), std: Vec::new(), gamma: 1.0, per_feature }
    } else {
        InputStats::FirstTask { per_feature }
    };
    Ok((d, stats))
}

/// [`build`] for a run on `stream`: the same method, except that `randumb<D>[+pixel]+all` gets its
/// standardisation and γ from every task's training samples ([`firmware::nn::rbf_input_stats`]), the offline
/// reference a board cannot compute (it has only the first task's samples when it draws the features).
pub fn build_for_stream(
    name: &str,
    preset: &Preset,
    profile: &BoardProfile,
    stream: &crate::data::stream::Stream,
) -> Result<Box<dyn Method>> {
    if let Some(rest) = name.strip_prefix("randumb")
        && let (d, InputStats::Given { per_feature, .. }) = randumb_spec(name, rest)?
    {
        let parts: Vec<ndarray::ArrayView2<'_, f32>> = stream.tasks.iter().map(|t| t.train.x.view()).collect();
        let all = ndarray::concatenate(ndarray::Axis(0), &parts)
            .map_err(|e| Error::Invalid(format!("{name}: the stream's training samples: {e}")))?;
        let (mean, std, gamma) = firmware::nn::rbf_input_stats(&all.view(), per_feature)?;
        let stats = InputStats::Given { mean, std, gamma, per_feature };
        return Ok(Box::new(Prototype::randumb(d, stats).map_err(|e| Error::UnknownMethod(e.to_string()))?));
    }
    build(name, preset, profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> BoardProfile {
        crate::runs::simulate::host_profile().unwrap()
    }

    /// Every listed name builds under its own name; the prototype heads take `+rp<M>` (RanPAC without training),
    /// and a bad width or an unknown option is a typed error.
    #[test]
    fn names_build_and_prototype_heads_take_random_features() {
        let preset = Preset::named("split-mnist-ci", None).unwrap();
        for name in ["ncm", "slda", "gpm", "gpm+became"] {
            assert_eq!(build(name, &preset, &host()).unwrap().name(), name);
        }
        assert_eq!(build("slda+rp2048", &preset, &host()).unwrap().name(), "slda+rp2048");
        assert_eq!(build("ncm+rp64", &preset, &host()).unwrap().name(), "ncm+rp64");
        for bad in ["slda+rp0", "slda+rp99999", "ncm+rpx", "slda+lt"] {
            assert!(matches!(build(bad, &preset, &host()), Err(Error::UnknownMethod(_))), "{bad}");
        }
    }

    /// The peers of issue 30 build under their own names; bad widths and options are typed errors.
    #[test]
    fn peers_build_under_their_names() {
        let preset = Preset::named("split-mnist-ci", None).unwrap();
        for name in [
            "slda-oas",
            "slda-oas+rp2048",
            "randumb2048",
            "randumb64+all",
            "randumb64+pixel",
            "randumb8+pixel+all",
            "fsa+slda+oas+rp2048",
            "fsa+slda",
        ] {
            assert_eq!(build(name, &preset, &host()).unwrap().name(), name);
        }
        for bad in [
            "randumb0",
            "randumb",
            "randumbx",
            "randumb64+local",
            "randumb64+all+pixel",
            "fsa+nope",
            "gpm+became+fsa+slda",
        ] {
            assert!(build(bad, &preset, &host()).is_err(), "{bad}");
        }
    }

    /// `holistic:<lr>` sets the tangent fine-tuning's Adam rate and `trm:<β>` TRM's consistency weight (the
    /// validation searches' knobs); out-of-range or non-numeric values are typed errors.
    #[test]
    fn holistic_takes_its_learning_rate() {
        let preset = Preset::named("mnist-pt", None).unwrap();
        assert_eq!(build("holistic:0.0003", &preset, &host()).unwrap().name(), "holistic:0.0003");
        assert_eq!(
            build("holistic:1e-4", &preset, &host()).unwrap().name(),
            "holistic",
            "the default rate keeps its name"
        );
        assert_eq!(build("trm:0.5", &preset, &host()).unwrap().name(), "trm:0.5");
        assert_eq!(build("trm:1", &preset, &host()).unwrap().name(), "trm");
        for bad in ["holistic:0", "holistic:-1e-3", "holistic:fast", "holistic:inf", "trm:-1", "trm:nan"] {
            assert!(matches!(build(bad, &preset, &host()), Err(Error::UnknownMethod(_))), "{bad}");
        }
    }
}
