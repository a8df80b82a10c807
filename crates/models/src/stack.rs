//! K replicas in one network: joining and splitting var stores, the stacked loss, per-replica
//! error counts, and per-unit gradient norms.

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::{Kind, Reduction, Tensor};

use crate::config::NetConfigExt;
use crate::error::{ModelError, Result};
use spec::NetConfig;

fn sorted_variables(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().collect()
}

/// Copies K single-model var stores into a K-replica var store of the same network
/// (built with `replicas = K`): every variable (weights, BN running statistics) of the
/// stacked store is the singles' tensors concatenated along dim 0, in order, so replica k
/// is `singles[k]` exactly (bit for bit).
///
/// Errors if a name is missing on either side or a shape does not match.
pub fn stack_var_stores(singles: &[&VarStore], stacked: &mut VarStore) -> Result<()> {
    let k = singles.len() as i64;
    if k == 0 {
        return Err(ModelError::Stacking(
            "no single-model var stores to stack".into(),
        ));
    }
    let singles: Vec<_> = singles.iter().map(|vs| sorted_variables(vs)).collect();
    let stacked_vars = sorted_variables(stacked);
    for (i, single) in singles.iter().enumerate() {
        if single.len() != stacked_vars.len() {
            return Err(ModelError::Stacking(format!(
                "single store {i} has {} variables, the stacked store {}",
                single.len(),
                stacked_vars.len()
            )));
        }
    }
    let device = stacked.device();
    let _guard = tch::no_grad_guard();
    for (name, target) in &stacked_vars {
        let parts = singles
            .iter()
            .enumerate()
            .map(|(i, single)| {
                single
                    .get(name)
                    .map(|t| t.to_device(device))
                    .ok_or_else(|| {
                        ModelError::Stacking(format!("single store {i} has no variable `{name}`"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let joined = Tensor::f_cat(&parts, 0)?;
        if joined.size() != target.size() {
            return Err(ModelError::Stacking(format!(
                "`{name}`: {k} singles of {:?} concatenate to {:?}, the stacked store has {:?}",
                parts[0].size(),
                joined.size(),
                target.size()
            )));
        }
        target.shallow_clone().f_copy_(&joined)?;
    }
    Ok(())
}

/// Copies replica `replica` (0-based) of a K-replica var store into a single-model var store
/// of the same network (built with `replicas = 1`). K is read from the shapes, which must
/// agree on it for every variable.
pub fn extract_replica(stacked: &VarStore, replica: usize, single: &mut VarStore) -> Result<()> {
    let stacked_vars = sorted_variables(stacked);
    let single_vars = sorted_variables(single);
    if stacked_vars.len() != single_vars.len() {
        return Err(ModelError::Stacking(format!(
            "the stacked store has {} variables, the single store {}",
            stacked_vars.len(),
            single_vars.len()
        )));
    }
    let device = single.device();
    let mut replicas: Option<i64> = None;
    let _guard = tch::no_grad_guard();
    for (name, target) in &single_vars {
        let source = stacked_vars.get(name).ok_or_else(|| {
            ModelError::Stacking(format!("the stacked store has no variable `{name}`"))
        })?;
        let (s, t) = (source.size(), target.size());
        let n = t.first().copied().unwrap_or(1);
        let shapes_agree = s.len() == t.len() && !t.is_empty() && s[1..] == t[1..] && s[0] % n == 0;
        if !shapes_agree {
            return Err(ModelError::Stacking(format!(
                "`{name}`: stacked {s:?} is not K copies of single {t:?}"
            )));
        }
        let k = s[0] / n;
        match replicas {
            None => replicas = Some(k),
            Some(previous) if previous != k => {
                return Err(ModelError::Stacking(format!(
                    "`{name}` holds {k} replicas, other variables {previous}"
                )))
            }
            Some(_) => {}
        }
        if replica as i64 >= k {
            return Err(ModelError::Stacking(format!(
                "replica {replica} asked for, the stacked store holds {k}"
            )));
        }
        let part = source.narrow(0, replica as i64 * n, n).to_device(device);
        target.shallow_clone().f_copy_(&part)?;
    }
    Ok(())
}

fn check_logits_labels(logits: &Tensor, labels: &Tensor) -> Result<(i64, i64)> {
    let (l, y) = (logits.size(), labels.size());
    if l.len() != 3 || y.len() != 2 || l[..2] != y[..] {
        return Err(ModelError::Shape(format!(
            "expected logits [K, B, classes] and labels [K, B], got {l:?} and {y:?}"
        )));
    }
    Ok((l[0], l[1]))
}

/// Σ_k mean_b CE(logits[k, b], labels[k, b]): each replica's mean cross-entropy, summed, so
/// each replica's gradient is the one it would get alone. `logits` `[K, B, classes]`,
/// `labels` `[K, B]` int64 → scalar.
pub fn stacked_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    // [K] → scalar
    Ok(per_replica_loss(logits, labels)?.sum(None))
}

/// Each replica's mean loss, `[K]` (the terms of [`stacked_loss`]).
pub fn per_replica_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (k, b) = check_logits_labels(logits, labels)?;
    // [K·B] → [K, B] → [K]
    let per_example = logits.flatten(0, 1).f_cross_entropy_loss::<Tensor>(
        &labels.flatten(0, 1),
        None,
        Reduction::None,
        -100,
        0.0,
    )?;
    Ok(per_example.view([k, b]).mean_dim(1, false, None))
}

/// Number of misclassified examples per replica: `[K, B, classes]`, `[K, B]` → `[K]` int64.
pub fn stacked_errors(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    check_logits_labels(logits, labels)?;
    Ok(logits
        .argmax(-1, false)
        .ne_tensor(labels)
        .sum_dim_intlist(1, false, Kind::Int64))
}

/// `[B, K·C, H, W]` gradient → its L2 norm per replica, `[K]` (float64).
fn per_replica_norm(grad: &Tensor, replicas: i64) -> Result<Tensor> {
    let b = grad.size().first().copied().unwrap_or(0);
    // [B, K, C·H·W] → [K]
    Ok(grad
        .f_reshape([b, replicas, -1])?
        .to_kind(Kind::Double)
        .square()
        .sum_dim_intlist([0i64, 2].as_slice(), false, None)
        .sqrt())
}

/// ‖∂E/∂x_l‖ for every residual unit l, per replica: `[L, K]` (float64), where E is
/// replica k's mean loss and x_l the input of unit l (from [`crate::Net::forward_with_unit_inputs`]).
/// One backward pass (`Tensor::run_backward` with the unit inputs as `inputs`); it does not
/// touch the parameters' `.grad`. Pass `keep_graph = true` to call `loss.backward()` after.
pub fn unit_grad_norms(
    loss: &Tensor,
    unit_inputs: &[Tensor],
    replicas: i64,
    keep_graph: bool,
) -> Result<Tensor> {
    if unit_inputs.is_empty() {
        return Err(ModelError::Shape("no unit inputs".into()));
    }
    let grads = Tensor::f_run_backward(&[loss], unit_inputs, keep_graph, false)?;
    let norms = grads
        .iter()
        .map(|g| per_replica_norm(g, replicas))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_stack(&norms, 0)?)
}

/// ‖∂E/∂x_l‖ per unit and replica, `[L, K]` (float64), read from the probes of
/// [`crate::Net::forward_with_unit_probes`] after `loss.backward()`.
pub fn probe_grad_norms(probes: &[Tensor], replicas: i64) -> Result<Tensor> {
    if probes.is_empty() {
        return Err(ModelError::Shape("no probes".into()));
    }
    let norms = probes
        .iter()
        .enumerate()
        .map(|(l, p)| {
            let g = p.grad();
            if !g.defined() {
                return Err(ModelError::Shape(format!(
                    "probe {l} has no gradient: call loss.backward() first"
                )));
            }
            per_replica_norm(&g, replicas)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::f_stack(&norms, 0)?)
}

/// Initialises a K-replica network as K lone models seeded apart: for each `seeds[k]`,
/// `tch::manual_seed(seed)` then a K = 1 build of `config` on the CPU, then
/// [`stack_var_stores`] into `stacked` (which holds `config` built with `replicas = K`, on
/// any device). Building on the CPU makes replica k's init the same on every machine and
/// whatever it is stacked with; the runner initialises every run this way, with the seed it
/// derives from the run's seed. Leaves the global RNG seeded by the last build; a caller
/// that shares the RNG between threads holds its lock around the call.
pub fn init_replicas_from_seeds(
    config: &NetConfig,
    seeds: &[i64],
    stacked: &mut VarStore,
) -> Result<()> {
    if seeds.len() as i64 != config.replicas {
        return Err(ModelError::Stacking(format!(
            "{} seeds for a network of {} replicas",
            seeds.len(),
            config.replicas
        )));
    }
    let single = config.with_replicas(1);
    let stores = seeds
        .iter()
        .map(|&seed| {
            tch::manual_seed(seed);
            let vs = VarStore::new(tch::Device::Cpu);
            single.build(&vs.root())?;
            Ok(vs)
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&VarStore> = stores.iter().collect();
    stack_var_stores(&refs, stacked)
}
