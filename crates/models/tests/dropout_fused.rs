//! The dropout shortcut's post-activation unit with its last BN, addition and ReLU fused
//! against the same network with libtorch's separate ops (`--bn-relu separate`): the same
//! logits and gradients to within fp32 rounding, masks and all. Its own test binary: the mode
//! is process-wide.

use models::fused::set_bn_relu;
use models::{stacked_loss, MemoryFormat, NetConfig, NetConfigExt, ShortcutKind};
use spec::BnRelu;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).norm().double_value(&[]);
    diff / b.norm().double_value(&[]).max(1e-30)
}

#[test]
fn a_fused_dropout_unit_equals_its_separate_ops() {
    tch::set_num_threads(2);
    let config = NetConfig::cifar(8).with_shortcut(ShortcutKind::Dropout { ratio: 0.5 });
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let net = config.build(&vs.root()).expect("the config builds");
    // channels-last, as the runner trains on the CPU
    let xs = MemoryFormat::ChannelsLast
        .apply(&Tensor::randn([16, 3, 16, 16], (Kind::Float, Device::Cpu)))
        .unsqueeze(0);
    let labels = Tensor::randint(10, [1, 16], (Kind::Int64, Device::Cpu));
    let mut outcomes = Vec::new();
    for mode in [BnRelu::Fused, BnRelu::Separate] {
        set_bn_relu(mode);
        vs.variables().values().for_each(|v| {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        });
        let logits = net.forward_stacked_seeded(&xs, true, &[77]).unwrap();
        stacked_loss(&logits, &labels).unwrap().backward();
        let grad = vs.variables()["stage1.unit1.conv1.weight"].grad().copy();
        outcomes.push((logits.detach(), grad));
    }
    set_bn_relu(BnRelu::Fused);
    let (fused, separate) = (&outcomes[0], &outcomes[1]);
    assert!(rel_err(&fused.0, &separate.0) < 1e-4, "logits");
    assert!(
        rel_err(&fused.1, &separate.1) < 1e-3,
        "gradient of the first convolution"
    );
    // the masks are drawn: another seed gives other logits
    let other = net.forward_stacked_seeded(&xs, true, &[78]).unwrap();
    assert!(rel_err(&other, &fused.0) > 1e-3, "dropout drew nothing");
}
