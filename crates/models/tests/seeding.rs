//! Seeded initialisation of stacked replicas. Alone in its test binary: it relies on the
//! global RNG, which tests running in parallel threads would share.

use models::{extract_replica, init_replicas_from_seeds, NetConfig, NetConfigExt, ShortcutKind};
use tch::nn::VarStore;
use tch::Device;

#[test]
fn replicas_from_seeds_are_the_lone_seeded_models() {
    let config = NetConfig::cifar(8)
        .with_shortcut(ShortcutKind::ExclusiveGating { gate_bias: -6.0 })
        .with_replicas(3);
    let seeds = [7, 8, 7];
    let vs = VarStore::new(Device::Cpu);
    config.build(&vs.root()).unwrap();
    let mut vs = vs;
    init_replicas_from_seeds(&config, &seeds, &mut vs).unwrap();

    let lone = |seed| {
        tch::manual_seed(seed);
        let vs = VarStore::new(Device::Cpu);
        config.with_replicas(1).build(&vs.root()).unwrap();
        vs
    };
    let replica = |k| {
        let mut one = VarStore::new(Device::Cpu);
        config.with_replicas(1).build(&one.root()).unwrap();
        extract_replica(&vs, k, &mut one).unwrap();
        one
    };
    let same = |a: &VarStore, b: &VarStore| {
        let b = b.variables();
        a.variables().iter().all(|(name, t)| t.equal(&b[name]))
    };
    assert!(same(&replica(0), &lone(7)));
    assert!(same(&replica(1), &lone(8)));
    assert!(
        same(&replica(2), &replica(0)),
        "the same seed gives the same model"
    );
    assert!(!same(&replica(1), &replica(0)), "different seeds differ");
    // BN starts at γ = 1, β = 0, not tch's default γ ~ U[0, 1)
    let vars = vs.variables();
    assert!(
        vars["stage1.unit1.bn1.weight"]
            .eq(1.0)
            .all()
            .int64_value(&[])
            == 1
    );
    assert!(vars["stage1.unit1.bn1.bias"].eq(0.0).all().int64_value(&[]) == 1);
    assert!(init_replicas_from_seeds(&config, &seeds[..2], &mut vs).is_err());
}
